"""Command-line plumbing shared by the scripts."""
import argparse


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors raise `error_class`, which main prints as one line."""

    error_class: type = ValueError

    def error(self, message):
        raise self.error_class(f"{message} (see --help)")
