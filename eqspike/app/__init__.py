"""The app: the command line (`cli`), `eqspike compare` (`compare`) and `eqspike predict` (`prediction`), on top of the library."""
