"""MQTT topic names and filters <-> fastflow subjects and patterns.

The mapping (the same idea as nats-server's MQTT gateway, made reversible):

* ``/`` separates levels and becomes ``.``;
* an empty level (a leading or trailing ``/``, or ``//``) becomes the token
  ``/``: ``/a//b`` -> ``/.a./.b``;
* a ``.`` inside a level becomes ``//``: ``v1.2/x`` -> ``v1//2.x``;
* ``+`` becomes ``*`` and ``#`` becomes ``>``; because MQTT's ``a/#`` also
  matches ``a`` itself, it translates to two patterns, ``a`` and ``a.>``;
* ``$share/<group>/<filter>`` is a shared subscription: the group becomes
  the queue group of the translated patterns.

MQTT's ``$`` rule (a filter starting with a wildcard does not match topics
starting with ``$``) is the matcher's own rule, so it holds through the
translation.  Whitespace, control characters, ``*`` and ``>`` are valid
in MQTT topics but cannot be carried by fastflow subjects (where ``*`` and
``>`` are wildcards): they raise ``SubjectError`` rather than change meaning.
"""

from fastflow._impl import validate_pattern, validate_subject
from fastflow.errors import SubjectError

__all__ = ("mqtt_filter_to_patterns", "mqtt_topic_to_subject", "subject_to_mqtt_topic")

MQTT_MAX_LEN = 65535  # bytes, UTF-8 (MQTT 3.1.1 section 1.5.3)
_SHARE = "$share/"


def _error(kind, text, reason):
    if len(text) > 80:
        text = text[:64] + "..."
    return SubjectError("invalid MQTT {} {!r}: {}".format(kind, text, reason))


def _check_text(kind, text):
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _error(kind, text.decode("utf-8", "replace"),
                         "not valid UTF-8: {}".format(exc)) from None
    elif not isinstance(text, str):
        raise TypeError("MQTT {} must be str or bytes, not {}".format(kind, type(text).__name__))
    if not text:
        raise _error(kind, text, "empty")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise _error(kind, text, "not encodable as UTF-8") from None
    if size > MQTT_MAX_LEN:
        raise _error(kind, text, "{} bytes, the limit is {}".format(size, MQTT_MAX_LEN))
    return text


def _level_token(kind, text, level, index):
    if not level:
        return "/"
    for c in level:
        if c == "\x00":
            raise _error(kind, text, "NUL character in level {}".format(index))
        if c <= " " or c == "\x7f" or c == "*" or c == ">":
            raise _error(
                kind,
                text,
                "character {!r} in level {} {!r} cannot be carried by a fastflow "
                "subject".format(c, index, level),
            )
    return level.replace(".", "//")


def mqtt_topic_to_subject(topic):
    """Translate an MQTT topic name (as published) to a fastflow subject."""
    topic = _check_text("topic", topic)
    tokens = []
    for i, level in enumerate(topic.split("/"), 1):
        if "+" in level or "#" in level:
            raise _error(
                "topic", topic, "wildcard {!r} in level {}: a topic name must be literal".format(
                    "+" if "+" in level else "#", i)
            )
        tokens.append(_level_token("topic", topic, level, i))
    subject = ".".join(tokens)
    try:
        validate_subject(subject)
    except SubjectError as exc:
        raise _error("topic", topic, "translates to {}".format(exc)) from None
    return subject


def mqtt_filter_to_patterns(mqtt_filter):
    """Translate an MQTT topic filter to ``(patterns, queue)``.

    ``patterns`` is a list of one or two fastflow patterns whose union
    matches what the filter matches; ``queue`` is the share name of a
    ``$share/<group>/<filter>`` subscription, else ``None``.
    """
    text = _check_text("filter", mqtt_filter)
    queue = None
    filt = text
    if text.startswith(_SHARE):
        group, sep, filt = text[len(_SHARE):].partition("/")
        if not group:
            raise _error("filter", text, "empty share name after '$share/'")
        for c in "+#":
            if c in group:
                raise _error("filter", text, "share name {!r} contains {!r}".format(group, c))
        if not sep or not filt:
            raise _error("filter", text, "no topic filter after the share name {!r}".format(group))
        queue = group
    levels = filt.split("/")
    last = len(levels)
    tokens = []
    for i, level in enumerate(levels, 1):
        if "#" in level:
            if level != "#":
                raise _error("filter", text, "'#' must occupy a whole level (level {} is {!r})"
                             .format(i, level))
            if i != last:
                raise _error("filter", text, "'#' must be the last level (found at level {} of {})"
                             .format(i, last))
            tokens.append(">")
        elif "+" in level:
            if level != "+":
                raise _error("filter", text, "'+' must occupy a whole level (level {} is {!r})"
                             .format(i, level))
            tokens.append("*")
        else:
            tokens.append(_level_token("filter", text, level, i))
    patterns = [".".join(tokens)]
    if tokens[-1] == ">" and last > 1:
        patterns.insert(0, ".".join(tokens[:-1]))
    for p in patterns:
        try:
            validate_pattern(p)
        except SubjectError as exc:
            raise _error("filter", text, "translates to {}".format(exc)) from None
    return patterns, queue


def subject_to_mqtt_topic(subject):
    """Translate a fastflow subject back to an MQTT topic name.

    The inverse of ``mqtt_topic_to_subject``; a subject that did not come
    from MQTT may still be translated if its tokens carry no ``+`` or ``#``.
    """
    validate_subject(subject)
    if isinstance(subject, (bytes, bytearray)):
        subject = bytes(subject).decode("utf-8")
    levels = []
    for i, tok in enumerate(subject.split("."), 1):
        if "+" in tok or "#" in tok:
            raise SubjectError(
                "subject {!r} cannot be an MQTT topic: {!r} in token {} {!r}".format(
                    subject, "+" if "+" in tok else "#", i, tok)
            )
        levels.append("" if tok == "/" else tok.replace("//", "."))
    return "/".join(levels)
