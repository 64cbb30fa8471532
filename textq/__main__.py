from textq.supervise import exit_with_supervisor

exit_with_supervisor()  # a child of `textq up` must not outlive it

from textq.cli import main  # noqa: E402

main()
