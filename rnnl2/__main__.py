"""`python -m rnnl2` and the `rnnl2` console script. SIGTERM exits 130 from the first line, while
the command line is still being imported (nothing to save yet); once a command runs, the CLI's
error boundary turns it into a stop that saves the run."""

import signal
import sys


def main() -> None:
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(130))
    from .cli import main as run_cli

    run_cli()


if __name__ == "__main__":
    main()
