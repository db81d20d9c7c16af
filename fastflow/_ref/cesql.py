"""The pure-Python twin of src_ext/cesql.pyx: a compiled CESQL program
(``fastflow._cesqlcode`` describes its instructions) run over a stack of
``(value, carried an error)`` pairs.  ``fastflow.cesql`` compiles the
programs; this evaluator is the core's with ``FASTFLOW_NO_EXTENSIONS=1``
and the oracle of the compiled one."""

import re

from fastflow import _cesqlcode as C


class _Stop(Exception):
    """Raised in fail-fast mode at the first error."""


def _like_regex(pattern):
    """A regular expression for a LIKE pattern: ``%`` any run of
    characters, ``_`` one character, ``\\%`` and ``\\_`` themselves; any
    other backslash is an ordinary character."""
    out = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n and pattern[i + 1] in "%_":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "%":
            out.append(".*")
        elif c == "_":
            out.append(".")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _attributes_of(event):
    """The attribute mapping of an event, a stored record or a mapping."""
    attributes = getattr(event, "attributes", None)
    if callable(attributes):
        return attributes()
    if hasattr(event, "get"):
        return event
    # a stored record (a log Record): its event's attributes
    from fastflow._ref.event import Event
    return Event.decode(event.subject, bytes(event)).attributes()


class CesqlProgram:
    """A compiled CESQL expression: ``code`` (instructions ``(op, a, b)``),
    ``consts`` and ``type`` (the static return type's code)."""

    __slots__ = ("code", "consts", "type", "_likes")

    def __init__(self, code, consts, type):
        self.code = tuple((int(op), int(a), int(b)) for op, a, b in code)
        self.consts = tuple(consts)
        self.type = int(type)
        self._likes = {a: _like_regex(self.consts[a])
                       for op, a, b in self.code if op == C.LIKE}

    def evaluate(self, event, fail_fast=False):
        """``(value, errors)`` of the expression for ``event`` (a
        ``fastflow.Event``, a stored ``Record`` or a mapping of attribute
        name -> value)."""
        return self._run(_attributes_of(event), fail_fast)

    def matches(self, event):
        """True only for the Boolean true without an error (fail-fast)."""
        value, errors = self._run(_attributes_of(event), True)
        return value is True and not errors

    def match_batch(self, batch):
        """The indexes (a list) of the records of a log ``Batch`` that match."""
        from fastflow._ref.event import Event
        out = []
        for i, (_seq, _ts, subject, data) in enumerate(batch):
            if self.matches(Event.decode(subject, bytes(data)).attributes()):
                out.append(i)
        return out

    def _run(self, attrs, fail_fast):
        errors = []
        try:
            value = self._execute(attrs, errors, fail_fast)
        except _Stop:
            return C.ZERO[self.type], errors[:1]
        return value, errors

    def _execute(self, attrs, errors, fail_fast):
        code = self.code
        consts = self.consts
        stack = []
        push = stack.append
        pop = stack.pop
        cast = C.cast

        def error(err):
            errors.append(err)
            if fail_fast:
                raise _Stop()

        pc = 0
        n = len(code)
        while pc < n:
            op, a, b = code[pc]
            pc += 1
            if op == C.PUSH:
                push((consts[a], False))
            elif op == C.LOAD:
                v = attrs.get(consts[a])
                if v is None:
                    error(C.missing_attribute(consts[a]))
                    push((False, True))
                else:
                    push((C.attribute_value(v), False))
            elif op == C.EXISTS:
                push((attrs.get(consts[a]) is not None, False))
            elif op == C.NOT or op == C.NEGATE or op == C.LIKE:
                ret = C.T_INTEGER if op == C.NEGATE else C.T_BOOLEAN
                param = C.T_BOOLEAN if op == C.NOT else ret if op == C.NEGATE else C.T_STRING
                v, err = pop()
                v, e = cast(v, param)
                if e is not None:
                    error(e)
                    err = True
                if err:
                    push((C.ZERO[ret], True))
                elif op == C.NOT:
                    push((not v, False))
                elif op == C.LIKE:
                    push(((self._likes[a].fullmatch(v) is None) is bool(b), False))
                elif v == C.INT32_MIN:
                    error(C.negate_error())
                    push((C.INT32_MAX, True))
                else:
                    push((-v, False))
            elif op == C.ARITH:
                y, ey = pop()
                x, ex = pop()
                if ex or ey:
                    push((0, True))
                    continue
                x, e1 = cast(x, C.T_INTEGER)
                if e1 is not None:
                    error(e1)
                y, e2 = cast(y, C.T_INTEGER)
                if e2 is not None:
                    error(e2)
                if e1 is not None or e2 is not None:
                    push((0, True))
                    continue
                r, e = C.arith(a, x, y)
                if e is not None:
                    error(e)
                push((r, e is not None))
            elif op == C.COMPARE:
                y, ey = pop()
                x, ex = pop()
                if ex or ey:
                    push((False, True))
                    continue
                if a == C.EQ or a == C.NE:
                    # = != <> are ambiguous (String, Integer and Boolean):
                    # exactly one definition has the right operand's type.
                    x, e = cast(x, C.type_of(y))
                    if e is not None:
                        error(e)
                        push((False, True))
                    else:
                        push(((x == y) is (a == C.EQ), False))
                    continue
                # < <= > >= are defined for Integer x Integer only
                x, e1 = cast(x, C.T_INTEGER)
                if e1 is not None:
                    error(e1)
                y, e2 = cast(y, C.T_INTEGER)
                if e2 is not None:
                    error(e2)
                if e1 is not None or e2 is not None:
                    push((False, True))
                elif a == C.LT:
                    push((x < y, False))
                elif a == C.LE:
                    push((x <= y, False))
                elif a == C.GT:
                    push((x > y, False))
                else:
                    push((x >= y, False))
            elif op == C.LOGIC:
                x, ex = pop()
                x, e = cast(x, C.T_BOOLEAN)
                if e is not None:
                    error(e)
                    ex = True
                if not ex:
                    # short circuit: the right operand is not evaluated
                    if (a == C.AND and not x) or (a == C.OR and x):
                        push((x, False))
                        pc = b
                        continue
                elif a == C.AND:
                    # the left operand's value is the zero value false
                    push((False, True))
                    pc = b
                    continue
                push((x, ex))
            elif op == C.LOGIC2:
                y, ey = pop()
                x, ex = pop()
                y, e = cast(y, C.T_BOOLEAN)
                if e is not None:
                    error(e)
                    ey = True
                if ex or ey:
                    push((False, True))
                elif a == C.AND:
                    push((x and y, False))
                elif a == C.OR:
                    push((x or y, False))
                else:
                    push((x != y, False))
            elif op == C.IN:
                items = stack[len(stack) - a:]
                del stack[len(stack) - a:]
                x, ex = pop()
                if ex or any(err for _, err in items):
                    push((False, True))
                    continue
                # the left operand's type is the target type of every element
                target = C.type_of(x)
                found = bad = False
                for v, _ in items:
                    v, e = cast(v, target)
                    if e is not None:
                        error(e)
                        bad = True
                    elif v == x:
                        found = True
                push((False, True) if bad else (found is not bool(b), False))
            elif op == C.CALL:
                params, ret, body = consts[a]
                args = stack[len(stack) - b:]
                del stack[len(stack) - b:]
                if any(err for _, err in args):
                    push((C.ZERO[ret], True))
                    continue
                values = []
                bad = False
                for (v, _), p in zip(args, params):
                    v, e = cast(v, p)
                    if e is not None:
                        error(e)
                        bad = True
                    values.append(v)
                if bad:
                    push((C.ZERO[ret], True))
                    continue
                r, e = body(*values)
                if e is not None:
                    error(e)
                push((r, e is not None))
            elif op == C.NOFUNC:
                error(C.missing_function(consts[a]))
                push((False, True))
            else:  # pragma: no cover - the compiler emits no other
                raise ValueError("unknown CESQL instruction {}".format(op))
        return stack[-1][0]

    def __repr__(self):
        return "<CesqlProgram {} instructions>".format(len(self.code))
