"""For tests that stop a command with Ctrl-C: the command must start able to receive it."""

import signal


def default_sigint() -> None:
    """A Popen `preexec_fn`: the child starts with SIGINT's default action, so Python turns it
    into KeyboardInterrupt. A test run started as a background job of a script ignores SIGINT
    and passes that on to its children, which then carry on through the test's Ctrl-C (seen:
    `nohup bash .ci/run &`)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
