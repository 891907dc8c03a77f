"""Fine-tuning a teacher on the task: the best dev epoch kept, stored with its card."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import torch

from eqspike.data.batches import EncodedSplit, batch_order, iterate_batches
from eqspike.data.evaluation import evaluate
from eqspike.data.tasks import TaskData
from eqspike.runtime.devices import set_seed
from eqspike.runtime.files import atomic_directory
from eqspike.runtime.optim import linear_schedule, make_optimizer
from eqspike.runtime.progress import StepLog, progress
from eqspike.teacher.base import CARD_NAME, Teacher, TeacherError, TeacherSpec
from eqspike.version import __version__


def fine_tune(
    teacher: Teacher,
    spec: TeacherSpec,
    task: TaskData,
    train_split: EncodedSplit,
    splits: dict[str, EncodedSplit],
    device: torch.device,
    store: Path,
    log=print,
    selection: dict[str, EncodedSplit] | None = None,
) -> Teacher:
    """Fine-tune the teacher's encoder and head on the task; keep the epoch that scores best on the
    ``selection`` splits (default: the dev ``splits``), stopping early on them too; score it on the
    dev splits; store it."""
    recipe = spec.recipe
    selection = splits if selection is None else selection
    on = "dev" if selection is splits else "selection"
    set_seed(recipe.seed)
    model = teacher.model.to(device)
    _name_labels(model.config, task)
    epochs = max(1, round(recipe.epochs)) if recipe.epochs else 0
    steps_per_epoch = -(-len(train_split) // recipe.batch_size)
    optimizer = make_optimizer(model.named_parameters(), recipe.lr, recipe.weight_decay)
    schedule = linear_schedule(optimizer, max(1, epochs * steps_per_epoch), recipe.warmup_ratio, recipe.schedule)
    logits_fn = lambda batch: model(**batch).logits  # noqa: E731
    best, best_state, history = None, None, []
    for epoch in range(epochs):
        model.train()
        _train_epoch(model, optimizer, schedule, train_split, spec, epoch, epochs, steps_per_epoch, device, log)
        model.eval()
        metrics = evaluate(logits_fn, task, selection, spec.eval_batch_size, device, desc=f"teacher {on}")
        history.append({"epoch": epoch + 1, **metrics})
        log(f"teacher epoch {epoch + 1}: {on} " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if best is None or metrics[task.metric] > best[task.metric]:
            best, best_epoch = metrics, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif recipe.patience and epoch - best_epoch >= recipe.patience:
            log(f"teacher: no better {on} {task.metric} for {recipe.patience} epochs; stopping (best: epoch {best_epoch + 1})")
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    chosen_on = best
    best = (
        evaluate(logits_fn, task, splits, spec.eval_batch_size, device, desc="teacher dev")
        if best is None or selection is not splits
        else best
    )
    card = _card(spec, task, best, on, chosen_on, history)
    with atomic_directory(store) as staging:
        model.save_pretrained(str(staging))
        teacher.tokenizer.save_pretrained(str(staging))
        (staging / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    log(f"teacher: stored in {store} (dev {task.metric} {best[task.metric]:.4f})")
    return Teacher(model.eval(), teacher.tokenizer, str(store), card)


def _name_labels(config: Any, task: TaskData) -> None:
    """Give the model's config the task's label names (id2label, label2id) and its problem type."""
    if task.label_names:
        config.id2label = dict(enumerate(task.label_names))
        config.label2id = {name: i for i, name in enumerate(task.label_names)}
    config.problem_type = "regression" if task.is_regression else "single_label_classification"


def _train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: Any,
    train_split: EncodedSplit,
    spec: TeacherSpec,
    epoch: int,
    epochs: int,
    steps_per_epoch: int,
    device: torch.device,
    log,
) -> None:
    """One epoch of fine-tuning on the task loss, in the recipe's seeded batch order, with the gradient
    norm clipped; a gradient that is not finite stops it (nothing is stored)."""
    recipe = spec.recipe
    bar = progress(
        iterate_batches(train_split, batch_order(len(train_split), recipe.batch_size, recipe.seed, epoch)),
        total=steps_per_epoch,
        desc=f"teacher epoch {epoch + 1}/{epochs}",
    )
    log_lines = StepLog(f"teacher epoch {epoch + 1}/{epochs}", steps_per_epoch, spec.logging_steps, recipe.batch_size, log)
    for step, batch in enumerate(bar, start=1):
        batch.pop("index")
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = model(**batch).loss
        loss.backward()
        if not torch.isfinite(torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)):
            raise TeacherError(
                f"teacher fine-tuning diverged in epoch {epoch + 1}, step {step}: the gradient is not "
                f"finite (loss {loss.item():.4g}); nothing was stored; lower --teacher-lr"
            )
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        log_lines.update(step, schedule.get_last_lr()[0], loss=loss.item())


def _card(
    spec: TeacherSpec,
    task: TaskData,
    dev: dict[str, float],
    on: str,
    chosen_on: dict[str, float] | None,
    history: list[dict[str, float]],
) -> dict:
    """The stored teacher's card: what it was fine-tuned from and how, and its scores."""
    return {
        "base": spec.name,
        "task": task.name,
        "num_labels": task.num_labels,
        "label_names": task.label_names,
        "metric": task.metric,
        "dev_score": dev[task.metric],
        "dev_metrics": dev,
        "selection": on,
        "selection_score": chosen_on[task.metric] if chosen_on else None,
        "history": history,
        "recipe": {**spec.recipe.key(), "epochs_run": len(history), "max_train_examples": spec.max_train_examples},
        "eqspike_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
