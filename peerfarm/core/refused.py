"""The error of a user's request that cannot be carried out."""


class Refused(ValueError):
    """A request (submit, cancel, pause, ...) refused; the message says why and what to do.

    Nothing changed. Faces show the message as it is (the CLI prints it, the node
    answers REFUSED, the app shows it in the window).
    """
