"""Subject tokenising and validation (reference for src_ext/subjects.pyx)."""

import re

from fastflow.errors import SubjectError

MAX_SUBJECT_LEN = 1024  # bytes, UTF-8
MAX_TOKENS = 128

_WILDCARDS = (b"*", b">")
# Anything that needs a closer look; a subject free of it is valid as soon
# as it is within the length and token limits (the fast path).
_SUSPECT = re.compile(rb"[\x00-\x20\x7f*>]|\.\.|^\.|\.$")


def as_bytes(subject, what="subject"):
    if isinstance(subject, str):
        try:
            return subject.encode("utf-8")
        except UnicodeEncodeError:
            raise SubjectError(
                "invalid {} {}: not encodable as UTF-8".format(what, _show(subject))
            ) from None
    if isinstance(subject, (bytes, bytearray, memoryview)):
        return bytes(subject)
    raise TypeError(
        "{} must be str or bytes, not {}".format(what, type(subject).__name__)
    )


def _show(subject):
    """The subject as error messages quote it (shortened when long)."""
    if isinstance(subject, (bytes, bytearray, memoryview)):
        subject = bytes(subject).decode("utf-8", "replace")
    if len(subject) > 80:
        subject = subject[:64] + "..."
    return repr(subject)


def subject_error(what, subject, reason):
    return SubjectError("invalid {} {}: {}".format(what, _show(subject), reason))


def tokenize(subject, pattern):
    """Validate ``subject`` and return its tokens as a list of bytes.

    ``pattern`` allows the wildcard tokens ``*`` and ``>``; a publish subject
    must be literal.  The checks and their order match the native core so
    that both raise the same message for the same input.
    """
    what = "pattern" if pattern else "subject"
    b = as_bytes(subject, what)
    n = len(b)
    if n == 0:
        raise subject_error(what, subject, "empty " + what)
    if n > MAX_SUBJECT_LEN:
        raise subject_error(
            what, subject, "{} bytes, the limit is {}".format(n, MAX_SUBJECT_LEN)
        )
    toks = b.split(b".")
    ntok = len(toks)
    if ntok <= MAX_TOKENS and _SUSPECT.search(b) is None:
        return toks
    for i, tok in enumerate(toks, 1):
        if i > MAX_TOKENS:
            raise subject_error(
                what, subject, "{} tokens, the limit is {}".format(ntok, MAX_TOKENS)
            )
        if not tok:
            raise subject_error(what, subject, "empty token at position {}".format(i))
        for c in tok:
            if c <= 0x20 or c == 0x7F:
                raise subject_error(
                    what,
                    subject,
                    "character {!r} not allowed in token {} at position {}".format(
                        chr(c), _show(tok), i
                    ),
                )
        if tok in _WILDCARDS:
            if not pattern:
                raise subject_error(
                    what,
                    subject,
                    "wildcard {!r} at position {}: a publish subject must be "
                    "literal".format(tok.decode(), i),
                )
            if tok == b">" and i != ntok:
                raise subject_error(
                    what,
                    subject,
                    "'>' must be the last token, found at position {} of {}".format(
                        i, ntok
                    ),
                )
        elif b"*" in tok or b">" in tok:
            wc = "*" if b"*" in tok else ">"
            if b">" in tok and b"*" in tok:
                wc = "*" if tok.index(b"*") < tok.index(b">") else ">"
            raise subject_error(
                what,
                subject,
                "wildcard {!r} inside token {} at position {}".format(
                    wc, _show(tok), i
                ),
            )
    return toks


def validate_subject(subject):
    """Raise ``SubjectError`` unless ``subject`` is a valid literal subject."""
    tokenize(subject, False)


def check_reply(reply):
    """Raise ``SubjectError`` unless ``reply`` (UTF-8 bytes) is a valid
    literal subject: a reply subject is written into other clients' wire
    lines, so it is held to the rules of a publish subject."""
    try:
        tokenize(reply, False)
    except SubjectError as exc:
        raise SubjectError("invalid reply " + str(exc)[8:]) from None


def validate_pattern(pattern):
    """Raise ``SubjectError`` unless ``pattern`` is a valid subscription pattern."""
    tokenize(pattern, True)
