"""CloudEvents SQL Expression Language (CESQL) v1.0: the parser and the
compiler.

``compile(text)`` parses an expression once, lowers it to a program
(``fastflow._cesqlcode``) and returns an :class:`Expression` holding the
core's ``CesqlProgram`` of it (C in ``src_ext/cesql.pyx``, Python in
``fastflow/_ref/cesql.py``); ``Expression.evaluate(event)`` computes its
value for one event, ``Expression.matches(event)`` is the filter predicate
of the Subscriptions API and ``Expression.match_batch(batch)`` filters a
log ``Batch``.  An event is a :class:`fastflow.Event`, a stored record or a
mapping of attribute name -> value.

Types
-----

Three types, as in the spec (3.1): String (``str``), Integer (``int`` in
-2147483648..2147483647) and Boolean (``bool``).  An attribute that is not
one of them is read as a String: a bytes value (CloudEvents Binary) as its
Base64 text, a ``datetime`` as its RFC 3339 text, an int outside 32 bits
as its decimal text, anything else as ``str(value)``.  URI and Timestamp
attributes are already strings.  A mapping's ``None`` value is an absent
attribute.

Syntax
------

Keywords (``AND OR XOR NOT LIKE IN EXISTS TRUE FALSE``) and function names
are case-insensitive; attribute names are letters and digits, read in
lower case (CloudEvents names are lower case, so ``SOURCE`` is ``source``).
String literals are ``'...'`` or ``"..."``; inside them ``\\'`` (or
``\\"``) is the delimiting quote and any other backslash is kept as it is,
so a LIKE pattern gets ``\\%`` and ``\\_`` unchanged.  An integer literal
may carry a sign written right before its digits (``-2147483648``) and must
fit in 32 bits.  Precedence, highest first (spec 3.6): function calls;
``NOT`` and unary ``-``; ``LIKE``; ``EXISTS``; ``IN``; ``* / %``; ``+ -``;
comparisons; ``AND OR XOR``.  Operators of equal precedence group left to
right, so ``a OR b AND c`` is ``(a OR b) AND c`` and ``NOT a = b`` is
``(NOT a) = b``.  Spaces, tabs, CR and LF separate tokens.

Evaluation and errors
---------------------

Every operator and function is total: it always yields a value of its
return type.  Errors are values collected beside the result (spec 3.3):
:class:`MathError`, :class:`CastError`, :class:`MissingAttributeError`,
:class:`MissingFunctionError`, :class:`FunctionEvaluationError` and
:class:`GenericError`, all :class:`EvaluationError`.  A parse error is
raised by ``compile`` as :class:`CesqlParseError`.

An operator or function that meets an error yields the value the spec
gives it (``5 / 0`` is 0, ``ABS(-2147483648)`` is 2147483647,
``LEFT('abc', -1)`` is ``'abc'``) or, where the spec gives none, the zero
value of its return type (``""``, ``0``, ``false``).  An operator or
function whose operand carried an error yields the zero value of its own
return type: ``true AND (missing = "")`` is ``false``, ``1 / missing`` is
0 with a MissingAttributeError and no MathError (spec 3.2).  An attribute
reference alone has no known return type and yields ``false``.

``AND`` does not evaluate its right operand when the left one is false,
``OR`` when it is true.  A call to an unknown function (or with an arity it
does not have) yields ``false`` and a MissingFunctionError at evaluation.

``evaluate`` runs in complete evaluation mode by default (every error is
collected); ``evaluate(event, fail_fast=True)`` stops at the first error
and returns the zero value of the expression's return type with that one
error (spec 4.1).  ``matches`` is true only for a Boolean ``true`` with no
error, evaluated fail-fast (spec 1.2).

Beyond the spec
---------------

The casting functions ``INT``, ``BOOL`` and ``STRING`` (which the spec
names in 3.7 and its TCK tests) are built in.  ``IS_BOOL`` and ``IS_INT``
of the pre-1.0 drafts are not: 1.0 and its TCK dropped them, so they are
missing functions here as in any 1.0 evaluator.  The spec leaves the result of an Integer
overflow in ``+ - * /`` open: it is a MathError with 0; ``-(-2147483648)``
is 2147483647 with a MathError, like ``ABS``.
"""

import re

from fastflow import _cesqlcode as C
from fastflow._impl import CesqlProgram
from fastflow.errors import (
    CastError,
    CesqlParseError,
    EvaluationError,
    FunctionEvaluationError,
    GenericError,
    MathError,
    MissingAttributeError,
    MissingFunctionError,
)

__all__ = (
    "BOOLEAN",
    "CastError",
    "CesqlParseError",
    "EvaluationError",
    "Expression",
    "FunctionEvaluationError",
    "GenericError",
    "INTEGER",
    "MathError",
    "MissingAttributeError",
    "MissingFunctionError",
    "STRING",
    "compile",
)

INT32_MIN = -2147483648
INT32_MAX = 2147483647

# Type names (spec 3.1); a node whose type is unknown (an attribute) is None.
STRING = "String"
INTEGER = "Integer"
BOOLEAN = "Boolean"

_TYPE_CODE = {STRING: C.T_STRING, INTEGER: C.T_INTEGER, BOOLEAN: C.T_BOOLEAN, None: C.T_ANY}
_TYPE_NAME = {code: name for name, code in _TYPE_CODE.items()}

# (TRIM strips Unicode White_Space: see fastflow._cesqlcode)
_WHITESPACE = C.WHITESPACE


def type_of(value):
    """The CESQL type of a Python value (bool before int: bool is an int)."""
    return _TYPE_NAME[C.type_of(value)]


# -- syntax tree ------------------------------------------------------------
# Each node has ``type`` (its static return type, None if unknown) and
# ``emit(program)``, which appends its instructions to a _Program: the
# operands first, then the operator (fastflow._cesqlcode).

class _Program:
    """The instructions and constants of a program being compiled."""

    __slots__ = ("code", "consts")

    def __init__(self):
        self.code = []
        self.consts = []

    def const(self, value):
        self.consts.append(value)
        return len(self.consts) - 1

    def add(self, op, a=0, b=0):
        self.code.append([op, a, b])
        return len(self.code) - 1


class _Node:
    __slots__ = ("type",)

    def children(self):
        return ()


class _Literal(_Node):
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value
        self.type = type_of(value)

    def emit(self, program):
        program.add(C.PUSH, program.const(self.value))

    def __repr__(self):
        if self.type is STRING:
            return "'" + self.value.replace("'", "\\'") + "'"
        if self.type is BOOLEAN:
            return "TRUE" if self.value else "FALSE"
        return str(self.value)


class _Attribute(_Node):
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name
        self.type = None

    def emit(self, program):
        program.add(C.LOAD, program.const(self.name))

    def __repr__(self):
        return self.name


class _Exists(_Node):
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name
        self.type = BOOLEAN

    def emit(self, program):
        program.add(C.EXISTS, program.const(self.name))

    def __repr__(self):
        return "EXISTS " + self.name


class _Unary(_Node):
    """An operator of one operand (``op``, an instruction that pops it)."""

    __slots__ = ("operand",)
    op = None

    def __init__(self, operand):
        self.operand = operand

    def children(self):
        return (self.operand,)

    def emit(self, program):
        self.operand.emit(program)
        program.add(self.op)


class _Not(_Unary):
    __slots__ = ()
    op = C.NOT

    def __init__(self, operand):
        _Unary.__init__(self, operand)
        self.type = BOOLEAN

    def __repr__(self):
        return "(NOT {!r})".format(self.operand)


class _Negate(_Unary):
    __slots__ = ()
    op = C.NEGATE

    def __init__(self, operand):
        _Unary.__init__(self, operand)
        self.type = INTEGER

    def __repr__(self):
        return "(-{!r})".format(self.operand)


_ARITHMETIC = {"+": C.ADD, "-": C.SUB, "*": C.MUL, "/": C.DIV, "%": C.MOD}
_COMPARISON = {"=": C.EQ, "!=": C.NE, "<>": C.NE, "<": C.LT, "<=": C.LE, ">": C.GT,
               ">=": C.GE}
_LOGIC = {"AND": C.AND, "OR": C.OR, "XOR": C.XOR}


class _Binary(_Node):
    __slots__ = ("op", "left", "right")

    def __init__(self, op, left, right):
        self.op = op
        self.left = left
        self.right = right
        self.type = INTEGER if op in _ARITHMETIC else BOOLEAN

    def children(self):
        return (self.left, self.right)

    def __repr__(self):
        return "({!r} {} {!r})".format(self.left, self.op, self.right)


class _Arithmetic(_Binary):
    __slots__ = ()

    def emit(self, program):
        self.left.emit(program)
        self.right.emit(program)
        program.add(C.ARITH, _ARITHMETIC[self.op])


class _Compare(_Binary):
    __slots__ = ()

    def emit(self, program):
        self.left.emit(program)
        self.right.emit(program)
        program.add(C.COMPARE, _COMPARISON[self.op])


class _Logic(_Binary):
    __slots__ = ()

    def emit(self, program):
        # LOGIC jumps past LOGIC2 when the left operand decides (short circuit)
        op = _LOGIC[self.op]
        self.left.emit(program)
        jump = program.add(C.LOGIC, op)
        self.right.emit(program)
        program.add(C.LOGIC2, op)
        program.code[jump][2] = len(program.code)


class _Like(_Unary):
    __slots__ = ("pattern", "negated")

    def __init__(self, operand, pattern, negated):
        _Unary.__init__(self, operand)
        self.pattern = pattern
        self.negated = negated
        self.type = BOOLEAN

    def emit(self, program):
        self.operand.emit(program)
        program.add(C.LIKE, program.const(self.pattern), int(self.negated))

    def __repr__(self):
        return "({!r} {}LIKE {!r})".format(
            self.operand, "NOT " if self.negated else "", _Literal(self.pattern))


class _In(_Node):
    __slots__ = ("operand", "items", "negated")

    def __init__(self, operand, items, negated):
        self.operand = operand
        self.items = items
        self.negated = negated
        self.type = BOOLEAN

    def children(self):
        return (self.operand,) + tuple(self.items)

    def emit(self, program):
        self.operand.emit(program)
        for item in self.items:
            item.emit(program)
        program.add(C.IN, len(self.items), int(self.negated))

    def __repr__(self):
        return "({!r} {}IN ({}))".format(self.operand, "NOT " if self.negated else "",
                                         ", ".join(repr(i) for i in self.items))


class _Call(_Node):
    __slots__ = ("name", "args", "target")

    def __init__(self, name, args):
        self.name = name
        self.args = args
        self.target = C.dispatch(name, len(args))
        # A call that cannot be dispatched yields false (spec 3.5).
        self.type = BOOLEAN if self.target is None else _TYPE_NAME[self.target[1]]

    def children(self):
        return tuple(self.args)

    def emit(self, program):
        if self.target is None:
            # its arguments are not evaluated
            if self.name in C.FUNCTIONS or self.name in C.VARIADIC:
                msg = "function {} does not take {} argument(s)".format(
                    self.name, len(self.args))
            else:
                msg = "unknown function {}".format(self.name)
            program.add(C.NOFUNC, program.const(msg))
            return
        for arg in self.args:
            arg.emit(program)
        program.add(C.CALL, program.const(self.target), len(self.args))

    def __repr__(self):
        return "{}({})".format(self.name, ", ".join(repr(a) for a in self.args))


# -- lexer ------------------------------------------------------------------

_KEYWORDS = frozenset(("AND", "OR", "XOR", "NOT", "LIKE", "IN", "EXISTS", "TRUE", "FALSE"))
_SPACE = " \t\r\n"
_OPERATORS = ("!=", "<>", "<=", ">=", "=", "<", ">", "+", "-", "*", "/", "%", "(", ")", ",")

# Token kinds
_T_INT = "integer"
_T_STRING = "string"
_T_WORD = "word"         # letters, digits and '_'
_T_KEYWORD = "keyword"
_T_OP = "op"
_T_END = "end"


class _Token:
    __slots__ = ("kind", "text", "value", "pos")

    def __init__(self, kind, text, value, pos):
        self.kind = kind
        self.text = text
        self.value = value
        self.pos = pos

    def describe(self):
        if self.kind is _T_END:
            return "the end of the expression"
        kind = {_T_OP: "operator", _T_WORD: "name"}.get(self.kind, self.kind)
        return "{} {!r}".format(kind, self.text)


def _tokens(text):
    out = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c in _SPACE:
            i += 1
            continue
        start = i
        if c == "'" or c == '"':
            i += 1
            chars = []
            while True:
                if i >= n:
                    raise CesqlParseError(
                        "at position {}: unterminated string literal".format(start),
                        text, start)
                d = text[i]
                if d == c:
                    i += 1
                    break
                if d == "\\" and i + 1 < n:
                    # \' (or \") is the quote; any other pair is kept as is.
                    e = text[i + 1]
                    chars.append(e if e == c else d + e)
                    i += 2
                    continue
                chars.append(d)
                i += 1
            out.append(_Token(_T_STRING, text[start:i], "".join(chars), start))
            continue
        if c.isascii() and (c.isalnum() or c == "_"):
            # A run of letters, digits and '_': an integer if all digits
            # (attribute names may start with a digit: '1abc' is a name).
            while i < n and text[i].isascii() and (text[i].isalnum() or text[i] == "_"):
                i += 1
            word = text[start:i]
            if word.isdigit():
                out.append(_Token(_T_INT, word, int(word), start))
            elif word.upper() in _KEYWORDS:
                out.append(_Token(_T_KEYWORD, word, word.upper(), start))
            else:
                out.append(_Token(_T_WORD, word, word, start))
            continue
        for op in _OPERATORS:
            if text.startswith(op, i):
                out.append(_Token(_T_OP, op, op, start))
                i += len(op)
                break
        else:
            raise CesqlParseError(
                "at position {}: unexpected character {!r}".format(i, c), text, i)
    out.append(_Token(_T_END, "", None, n))
    return out


# -- parser -----------------------------------------------------------------
# Precedence climbing over the levels of spec 3.6, each left-associative.

_LEVELS = (
    ("AND", "OR", "XOR"),
    ("=", "!=", "<>", ">=", "<=", ">", "<"),
    ("+", "-"),
    ("*", "/", "%"),
)

_IDENTIFIER = re.compile(r"[a-zA-Z0-9]+\Z")
_FUNCTION_NAME = re.compile(r"[a-zA-Z][a-zA-Z_]*\Z")


class _Parser:
    def __init__(self, text):
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0

    def peek(self, k=0):
        return self.tokens[min(self.i + k, len(self.tokens) - 1)]

    def next(self):
        t = self.tokens[self.i]
        if t.kind is not _T_END:
            self.i += 1
        return t

    def fail(self, token, expected):
        raise CesqlParseError("at position {}: expected {}, got {}".format(
            token.pos, expected, token.describe()), self.text, token.pos)

    def is_op(self, token, *ops):
        return token.kind is _T_OP and token.text in ops

    def is_keyword(self, token, *words):
        return token.kind is _T_KEYWORD and token.value in words

    def expect_op(self, op):
        t = self.next()
        if not self.is_op(t, op):
            self.fail(t, repr(op))
        return t

    def parse(self):
        if self.peek().kind is _T_END:
            self.fail(self.peek(), "an expression")
        node = self.binary(0)
        t = self.peek()
        if t.kind is not _T_END:
            self.fail(t, "an operator or the end of the expression")
        return node

    def binary(self, level):
        if level == len(_LEVELS):
            return self.postfix()
        node = self.binary(level + 1)
        ops = _LEVELS[level]
        while True:
            t = self.peek()
            if level == 0:
                if not self.is_keyword(t, *ops):
                    return node
                op = t.value
            elif self.is_op(t, *ops):
                op = t.text
            else:
                return node
            self.next()
            right = self.binary(level + 1)
            if level == 0:
                node = _Logic(op, node, right)
            elif level == 1:
                node = _Compare(op, node, right)
            else:
                node = _Arithmetic(op, node, right)

    def postfix(self):
        # [NOT] LIKE 'pattern' and [NOT] IN (set) bind tighter than every
        # binary operator and looser than unary ones.
        node = self.unary()
        while True:
            t = self.peek()
            negated = False
            if self.is_keyword(t, "NOT") and self.is_keyword(self.peek(1), "LIKE", "IN"):
                negated = True
                self.next()
                t = self.peek()
            if self.is_keyword(t, "LIKE"):
                self.next()
                p = self.next()
                if p.kind is not _T_STRING:
                    self.fail(p, "a string literal as the LIKE pattern")
                node = _Like(node, p.value, negated)
            elif self.is_keyword(t, "IN"):
                self.next()
                self.expect_op("(")
                items = [self.binary(0)]
                while self.is_op(self.peek(), ","):
                    self.next()
                    items.append(self.binary(0))
                t = self.next()
                if not self.is_op(t, ")"):
                    self.fail(t, "',' or ')' in the IN set")
                node = _In(node, items, negated)
            else:
                return node

    def unary(self):
        t = self.peek()
        if self.is_keyword(t, "NOT"):
            self.next()
            return _Not(self.unary())
        if self.is_op(t, "-", "+"):
            nxt = self.peek(1)
            if nxt.kind is _T_INT and nxt.pos == t.pos + 1:
                # A signed integer literal (spec 2.2): '-' or '+' right
                # before the digits.
                self.next()
                self.next()
                return self.integer(-nxt.value if t.text == "-" else nxt.value, t.pos)
            if t.text == "-":
                self.next()
                return _Negate(self.unary())
        return self.primary()

    def integer(self, value, pos):
        if not INT32_MIN <= value <= INT32_MAX:
            raise CesqlParseError(
                "at position {}: integer literal {} is outside the 32-bit range "
                "-2147483648..2147483647".format(pos, value), self.text, pos)
        return _Literal(value)

    def primary(self):
        t = self.next()
        if t.kind is _T_INT:
            return self.integer(t.value, t.pos)
        if t.kind is _T_STRING:
            return _Literal(t.value)
        if t.kind is _T_KEYWORD:
            if t.value == "TRUE":
                return _Literal(True)
            if t.value == "FALSE":
                return _Literal(False)
            if t.value == "EXISTS":
                name = self.next()
                if name.kind is not _T_WORD or not _IDENTIFIER.match(name.text):
                    self.fail(name, "an attribute name after EXISTS")
                return _Exists(name.text.lower())
            self.fail(t, "an expression")
        if self.is_op(t, "("):
            node = self.binary(0)
            self.expect_op(")")
            return node
        if t.kind is _T_WORD:
            if self.is_op(self.peek(), "("):
                if not _FUNCTION_NAME.match(t.text):
                    self.fail(t, "a function name (letters and '_')")
                self.next()
                args = []
                if not self.is_op(self.peek(), ")"):
                    args.append(self.binary(0))
                    while self.is_op(self.peek(), ","):
                        self.next()
                        args.append(self.binary(0))
                c = self.next()
                if not self.is_op(c, ")"):
                    self.fail(c, "',' or ')' in the arguments of {}".format(t.text.upper()))
                return _Call(t.text.upper(), args)
            if not _IDENTIFIER.match(t.text):
                self.fail(t, "an attribute name (letters and digits)")
            return _Attribute(t.text.lower())
        self.fail(t, "an expression")


# -- public API -------------------------------------------------------------

class Expression:
    """A compiled CESQL expression.  ``expression`` is its source text;
    ``type`` its static return type (``"Boolean"``, ``"Integer"``,
    ``"String"``, or None for a lone attribute reference); ``program`` the
    core's ``CesqlProgram`` that evaluates it."""

    __slots__ = ("expression", "program", "_root")

    def __init__(self, expression, root):
        self.expression = expression
        self._root = root
        out = _Program()
        root.emit(out)
        self.program = CesqlProgram(out.code, out.consts, _TYPE_CODE[root.type])

    @property
    def type(self):
        return self._root.type

    def evaluate(self, event, fail_fast=False):
        """``(value, errors)`` for ``event`` (a ``fastflow.Event``, a stored
        record or a mapping of attribute name -> value).  ``errors`` is a
        list of :class:`EvaluationError`, empty when none occurred.  With
        ``fail_fast`` the evaluation stops at the first error and the value
        is the zero value of the expression's return type."""
        return self.program.evaluate(event, fail_fast)

    def matches(self, event):
        """The filter result (spec 1.2): true only if the expression
        evaluates to the Boolean true without any error."""
        return self.program.matches(event)

    def match_batch(self, batch):
        """The indexes (a list) of the records of a log ``Batch`` that match."""
        return self.program.match_batch(batch)

    def __repr__(self):
        return "<cesql.Expression {!r} parsed as {!r}>".format(self.expression, self._root)


def compile(expression):
    """Parse ``expression`` into an :class:`Expression`; raises
    :class:`CesqlParseError` naming the position of the first problem."""
    if not isinstance(expression, str):
        raise TypeError("expected a str expression, got {}".format(type(expression).__name__))
    return Expression(expression, _Parser(expression).parse())
