import signal
import sys
from types import FrameType


def _stop_like_ctrl_c(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


# `docker stop` and Kubernetes stop a job with SIGTERM: treat it as Ctrl-C (exit 130 with the --resume hint). In a
# container the job is PID 1, which gets no default action for SIGTERM: without a handler it would run on until the
# grace period ends in SIGKILL. Installed before the heavy imports, so an early stop is not lost either.
signal.signal(signal.SIGTERM, _stop_like_ctrl_c)

from training.cli import main  # noqa: E402

sys.exit(main())
