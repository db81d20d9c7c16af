"""CloudEvents SQL Expression Language (CESQL) v1.0: the pure-Python
reference implementation.

``compile(text)`` parses an expression once and returns an
:class:`Expression`; ``Expression.evaluate(event)`` computes its value for
one event and ``Expression.matches(event)`` is the filter predicate of the
Subscriptions API.  An event is a :class:`fastflow.Event` or a mapping of
attribute name -> value.

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

import base64
import datetime as _dt
import re

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

_ZERO = {STRING: "", INTEGER: 0, BOOLEAN: False, None: False}

_ANY = "Any"    # a parameter taken without casting

# Unicode White_Space (the property TRIM uses, spec 3.5.1); str.strip()
# would also remove U+001C..U+001F, which are not White_Space.
_WHITESPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004"
               "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")

_INT_TEXT = re.compile(r"[+-]?[0-9]+\Z", re.ASCII)


# (the error classes live with every other in fastflow.errors; re-exported here)

# -- casting (spec 3.7) -----------------------------------------------------

def type_of(value):
    """The CESQL type of a Python value (bool before int: bool is an int)."""
    if type(value) is bool:
        return BOOLEAN
    if type(value) is int:
        return INTEGER
    return STRING


def _cast(value, target, errors):
    """``value`` cast to ``target``; on failure the zero value of ``target``
    and a CastError appended to ``errors``."""
    t = type_of(value)
    if t is target:
        return value
    if target is STRING:
        if t is BOOLEAN:
            return "true" if value else "false"
        return str(value)
    if target is INTEGER:
        if t is BOOLEAN:
            return 1 if value else 0
        if _INT_TEXT.match(value):
            n = int(value)
            if INT32_MIN <= n <= INT32_MAX:
                return n
            errors.append(CastError(
                "cannot cast {!r} to Integer: outside -2147483648..2147483647".format(value)))
            return 0
        errors.append(CastError("cannot cast {!r} to Integer: not a base 10 integer".format(value)))
        return 0
    # target is BOOLEAN
    if t is INTEGER:
        return value != 0
    low = value.lower()
    if low == "true":
        return True
    if low == "false":
        return False
    errors.append(CastError(
        "cannot cast {!r} to Boolean: expected 'true' or 'false'".format(value)))
    return False


def _attribute_value(v):
    """An attribute value as a CESQL value (spec 3.2)."""
    t = type(v)
    if t is str or t is bool:
        return v
    if t is int:
        return v if INT32_MIN <= v <= INT32_MAX else str(v)
    if t is bytes or t is bytearray or t is memoryview:
        return base64.b64encode(bytes(v)).decode("ascii")
    if isinstance(v, _dt.datetime):
        s = v.isoformat()
        return s[:-6] + "Z" if s.endswith("+00:00") else s
    return str(v)


# -- evaluation context -----------------------------------------------------

class _Stop(Exception):
    """Raised in fail-fast mode at the first error."""


class _Context:
    __slots__ = ("attributes", "errors", "fail_fast")

    def __init__(self, attributes, fail_fast):
        self.attributes = attributes
        self.errors = []
        self.fail_fast = fail_fast

    def error(self, err):
        self.errors.append(err)
        if self.fail_fast:
            raise _Stop()

    def cast(self, value, target):
        n = len(self.errors)
        out = _cast(value, target, self.errors)
        if self.fail_fast and len(self.errors) > n:
            raise _Stop()
        return out


# -- syntax tree ------------------------------------------------------------
# Each node has ``type`` (its static return type, None if unknown) and
# ``eval(ctx)``.  A node checks whether its operands added errors to
# ``ctx.errors``; if so it returns its zero value (see the module docstring).

class _Node:
    __slots__ = ("type",)

    def children(self):
        return ()


class _Literal(_Node):
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value
        self.type = type_of(value)

    def eval(self, ctx):
        return self.value

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

    def eval(self, ctx):
        v = ctx.attributes.get(self.name)
        if v is None:
            ctx.error(MissingAttributeError("missing attribute {!r}".format(self.name)))
            return False
        return _attribute_value(v)

    def __repr__(self):
        return self.name


class _Exists(_Node):
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name
        self.type = BOOLEAN

    def eval(self, ctx):
        return ctx.attributes.get(self.name) is not None

    def __repr__(self):
        return "EXISTS " + self.name


class _Unary(_Node):
    """An operator of one operand: the operand is evaluated and cast to
    ``param``; if either added an error the node yields the zero value of
    its type, else ``apply(ctx, value)``."""

    __slots__ = ("operand",)
    param = None

    def __init__(self, operand):
        self.operand = operand

    def children(self):
        return (self.operand,)

    def eval(self, ctx):
        n = len(ctx.errors)
        v = ctx.cast(self.operand.eval(ctx), self.param)
        if len(ctx.errors) > n:
            return _ZERO[self.type]
        return self.apply(ctx, v)


class _Not(_Unary):
    __slots__ = ()
    param = BOOLEAN

    def __init__(self, operand):
        _Unary.__init__(self, operand)
        self.type = BOOLEAN

    def apply(self, ctx, v):
        return not v

    def __repr__(self):
        return "(NOT {!r})".format(self.operand)


class _Negate(_Unary):
    __slots__ = ()
    param = INTEGER

    def __init__(self, operand):
        _Unary.__init__(self, operand)
        self.type = INTEGER

    def apply(self, ctx, v):
        if v == INT32_MIN:
            ctx.error(MathError("integer overflow: -(-2147483648)"))
            return INT32_MAX
        return -v

    def __repr__(self):
        return "(-{!r})".format(self.operand)


def _operands(ctx, nodes, params):
    """The values of ``nodes`` cast to ``params`` (a type each, or _ANY: not
    cast), or None if an evaluation or a cast added an error: every node is
    evaluated before any is cast."""
    n = len(ctx.errors)
    values = [node.eval(ctx) for node in nodes]
    if len(ctx.errors) > n:
        return None
    values = [v if p is _ANY else ctx.cast(v, p) for v, p in zip(values, params)]
    if len(ctx.errors) > n:
        return None
    return values


def _cast_or_none(ctx, value, target):
    """``value`` cast to ``target``, or None if the cast added an error."""
    n = len(ctx.errors)
    value = ctx.cast(value, target)
    return None if len(ctx.errors) > n else value


def _div(x, y):
    """Integer division rounded towards 0."""
    q = abs(x) // abs(y)
    return q if (x < 0) == (y < 0) else -q


def _mod(x, y):
    """Remainder with the sign of ``x``."""
    r = abs(x) % abs(y)
    return -r if x < 0 else r


_ARITHMETIC = {
    "+": lambda x, y: x + y,
    "-": lambda x, y: x - y,
    "*": lambda x, y: x * y,
    "/": _div,
    "%": _mod,
}

_ORDER = {
    "<": lambda x, y: x < y,
    "<=": lambda x, y: x <= y,
    ">": lambda x, y: x > y,
    ">=": lambda x, y: x >= y,
}


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

    def eval(self, ctx):
        values = _operands(ctx, (self.left, self.right), (INTEGER, INTEGER))
        if values is None:
            return 0
        x, y = values
        op = self.op
        if y == 0 and (op == "/" or op == "%"):
            ctx.error(MathError("{} by zero: {} {} 0".format(
                "division" if op == "/" else "remainder", x, op)))
            return 0
        r = _ARITHMETIC[op](x, y)
        if not INT32_MIN <= r <= INT32_MAX:
            ctx.error(MathError("integer overflow: {} {} {} is {}".format(x, op, y, r)))
            return 0
        return r


class _Compare(_Binary):
    __slots__ = ()

    def eval(self, ctx):
        values = _operands(ctx, (self.left, self.right), (_ANY, _ANY))
        if values is None:
            return False
        x, y = values
        op = self.op
        if op in _ORDER:
            # Defined for Integer x Integer only: both operands cast.
            x = _cast_or_none(ctx, x, INTEGER)
            y = _cast_or_none(ctx, y, INTEGER)
            if x is None or y is None:
                return False
            return _ORDER[op](x, y)
        # = != <> are ambiguous (String, Integer and Boolean): exactly one
        # definition has the right operand's type, so x is cast to it.
        x = _cast_or_none(ctx, x, type_of(y))
        if x is None:
            return False
        return (x == y) if op == "=" else (x != y)


class _Logic(_Binary):
    __slots__ = ()

    def eval(self, ctx):
        n = len(ctx.errors)
        x = ctx.cast(self.left.eval(ctx), BOOLEAN)
        op = self.op
        if len(ctx.errors) == n:
            # Short circuit: the right operand is not evaluated.
            if op == "AND" and not x:
                return False
            if op == "OR" and x:
                return True
        else:
            # The left operand's value is the zero value false: AND stops,
            # OR and XOR evaluate the right one (its errors are collected).
            if op == "AND":
                return False
        y = ctx.cast(self.right.eval(ctx), BOOLEAN)
        if len(ctx.errors) > n:
            return False
        if op == "AND":
            return x and y
        if op == "OR":
            return x or y
        return x != y


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


class _Like(_Unary):
    __slots__ = ("pattern", "negated", "regex")
    param = STRING

    def __init__(self, operand, pattern, negated):
        _Unary.__init__(self, operand)
        self.pattern = pattern
        self.negated = negated
        self.regex = _like_regex(pattern)
        self.type = BOOLEAN

    def apply(self, ctx, v):
        return (self.regex.fullmatch(v) is None) is self.negated

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

    def eval(self, ctx):
        n = len(ctx.errors)
        x = self.operand.eval(ctx)
        values = [item.eval(ctx) for item in self.items]
        if len(ctx.errors) > n:
            return False
        # The left operand's type is the target type of every element.
        target = type_of(x)
        found = False
        for v in values:
            if ctx.cast(v, target) == x:
                found = True
        if len(ctx.errors) > n:
            return False
        return found is not self.negated

    def __repr__(self):
        return "({!r} {}IN ({}))".format(self.operand, "NOT " if self.negated else "",
                                         ", ".join(repr(i) for i in self.items))


# -- functions (spec 3.5) ---------------------------------------------------
# Each built-in: (parameter types, variadic type or None, return type, body).
# A body takes (ctx, args) with args already cast; it returns a value of
# the return type and reports its own errors through ctx.error.

def _fn_left(ctx, x, y):
    if y < 0:
        ctx.error(FunctionEvaluationError(
            "LEFT: the length must not be negative, got {}".format(y)))
        return x
    return x[:y]


def _fn_right(ctx, x, y):
    if y < 0:
        ctx.error(FunctionEvaluationError(
            "RIGHT: the length must not be negative, got {}".format(y)))
        return x
    return x[len(x) - y:] if y < len(x) else x


def _substring_start(ctx, x, pos):
    """The 0-based start for SUBSTRING, or None (with an error) if ``pos``
    is outside the string."""
    n = len(x)
    if pos > n or pos < -n:
        ctx.error(FunctionEvaluationError(
            "SUBSTRING: position {} is outside a string of length {}".format(pos, n)))
        return None
    return pos - 1 if pos > 0 else n + pos


def _fn_substring2(ctx, x, pos):
    start = _substring_start(ctx, x, pos)
    if start is None or pos == 0:
        return ""
    return x[start:]


def _fn_substring3(ctx, x, pos, length):
    start = _substring_start(ctx, x, pos)
    if start is None:
        return ""
    if length < 0:
        ctx.error(FunctionEvaluationError(
            "SUBSTRING: the length must not be negative, got {}".format(length)))
        return ""
    if pos == 0:
        return ""
    return x[start:start + length]


def _fn_abs(ctx, x):
    if x == INT32_MIN:
        ctx.error(MathError("ABS(-2147483648) overflows; the result is 2147483647"))
        return INT32_MAX
    return abs(x)


# name -> {arity: (params, return type, body)}; variadic: name -> (fixed
# params, variadic type, return type, body), used for arities >= len(fixed)
# that have no fixed definition.
_FUNCTIONS = {
    "LENGTH": {1: ((STRING,), INTEGER, lambda ctx, x: len(x))},
    "LOWER": {1: ((STRING,), STRING, lambda ctx, x: x.lower())},
    "UPPER": {1: ((STRING,), STRING, lambda ctx, x: x.upper())},
    "TRIM": {1: ((STRING,), STRING, lambda ctx, x: x.strip(_WHITESPACE))},
    "LEFT": {2: ((STRING, INTEGER), STRING, _fn_left)},
    "RIGHT": {2: ((STRING, INTEGER), STRING, _fn_right)},
    "SUBSTRING": {2: ((STRING, INTEGER), STRING, _fn_substring2),
                  3: ((STRING, INTEGER, INTEGER), STRING, _fn_substring3)},
    "ABS": {1: ((INTEGER,), INTEGER, _fn_abs)},
    "INT": {1: ((INTEGER,), INTEGER, lambda ctx, x: x)},
    "BOOL": {1: ((BOOLEAN,), BOOLEAN, lambda ctx, x: x)},
    "STRING": {1: ((STRING,), STRING, lambda ctx, x: x)},
}

_VARIADIC = {
    "CONCAT": ((), STRING, STRING, lambda ctx, *xs: "".join(xs)),
    "CONCAT_WS": ((STRING,), STRING, STRING, lambda ctx, sep, *xs: sep.join(xs)),
}


def _dispatch(name, arity):
    """``(parameter types, return type, body)`` for a call, or None."""
    fixed = _FUNCTIONS.get(name)
    if fixed is not None and arity in fixed:
        return fixed[arity]
    variadic = _VARIADIC.get(name)
    if variadic is not None and arity >= len(variadic[0]):
        params, rest, ret, body = variadic
        return (params + (rest,) * (arity - len(params)), ret, body)
    return None


class _Call(_Node):
    __slots__ = ("name", "args", "target")

    def __init__(self, name, args):
        self.name = name
        self.args = args
        self.target = _dispatch(name, len(args))
        # A call that cannot be dispatched yields false (spec 3.5).
        self.type = BOOLEAN if self.target is None else self.target[1]

    def children(self):
        return tuple(self.args)

    def eval(self, ctx):
        if self.target is None:
            if self.name in _FUNCTIONS or self.name in _VARIADIC:
                msg = "function {} does not take {} argument(s)".format(
                    self.name, len(self.args))
            else:
                msg = "unknown function {}".format(self.name)
            ctx.error(MissingFunctionError(msg))
            return False
        params, ret, body = self.target
        values = _operands(ctx, self.args, params)
        if values is None:
            return _ZERO[ret]
        return body(ctx, *values)

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

def _attributes_of(event):
    attributes = getattr(event, "attributes", None)
    if callable(attributes):
        return attributes()
    return event


class Expression:
    """A compiled CESQL expression.  ``expression`` is its source text;
    ``type`` its static return type (``"Boolean"``, ``"Integer"``,
    ``"String"``, or None for a lone attribute reference)."""

    __slots__ = ("expression", "_root")

    def __init__(self, expression, root):
        self.expression = expression
        self._root = root

    @property
    def type(self):
        return self._root.type

    def evaluate(self, event, fail_fast=False):
        """``(value, errors)`` for ``event`` (a ``fastflow.Event`` or a
        mapping of attribute name -> value).  ``errors`` is a list of
        :class:`EvaluationError`, empty when none occurred.  With
        ``fail_fast`` the evaluation stops at the first error and the value
        is the zero value of the expression's return type."""
        ctx = _Context(_attributes_of(event), fail_fast)
        try:
            value = self._root.eval(ctx)
        except _Stop:
            return _ZERO[self._root.type], ctx.errors[:1]
        return value, ctx.errors

    def matches(self, event):
        """The filter result (spec 1.2): true only if the expression
        evaluates to the Boolean true without any error."""
        value, errors = self.evaluate(event, fail_fast=True)
        return value is True and not errors

    def __repr__(self):
        return "<cesql.Expression {!r} parsed as {!r}>".format(self.expression, self._root)


def compile(expression):
    """Parse ``expression`` into an :class:`Expression`; raises
    :class:`CesqlParseError` naming the position of the first problem."""
    if not isinstance(expression, str):
        raise TypeError("expected a str expression, got {}".format(type(expression).__name__))
    return Expression(expression, _Parser(expression).parse())
