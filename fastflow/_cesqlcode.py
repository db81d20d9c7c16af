"""The instruction format of compiled CESQL expressions, shared by the
compiler (``fastflow.cesql``) and both evaluators (``CesqlProgram`` of
``src_ext/cesql.pyx`` and of ``fastflow/_ref/cesql.py``).

A program is a tuple of instructions ``(op, a, b)`` run over a stack of
values, each with a flag saying whether computing it added an error.
``consts`` holds the operands the instructions name by index.  This
module also holds what both evaluators must say alike: the error
messages, the casts of attribute values, and the built-in functions'
bodies (each returns ``(value, error or None)``).  It imports only
``fastflow.errors``, so the core can import it.

Instructions (``a``, ``b``: ints; ``consts[a]``: an operand):

=========  ======================================================================
PUSH a     push the literal ``consts[a]`` (str, int or bool)
LOAD a     push attribute ``consts[a]``; absent: false and a MissingAttributeError
EXISTS a   push whether attribute ``consts[a]`` is present
NOT        cast to Boolean, negate
NEGATE     cast to Integer, negate (-(-2147483648): 2147483647 and a MathError)
LIKE a b   cast to String, match the pattern ``consts[a]``; ``b``: NOT LIKE
ARITH a    pop y, x; cast both to Integer; ``a``: one of ADD SUB MUL DIV MOD
COMPARE a  pop y, x; ``a``: EQ NE (x cast to y's type) or LT LE GT GE (Integers)
LOGIC a b  the left operand of AND/OR/XOR (``a``): cast to Boolean; AND on false
           or on an error, OR on true: leave the result and jump to ``b``
LOGIC2 a   pop y, x: x AND/OR/XOR y (false if either carried an error)
IN a b     pop ``a`` items and x; cast each item to x's type; ``b``: NOT IN
CALL a b   pop ``b`` arguments; ``consts[a]`` is a built-in's (params, return, body)
NOFUNC a   push false and a MissingFunctionError with the message ``consts[a]``
=========  ======================================================================
"""

import base64
import datetime as _dt
import re

from fastflow.errors import (
    CastError,
    FunctionEvaluationError,
    MathError,
    MissingAttributeError,
    MissingFunctionError,
)

INT32_MIN = -2147483648
INT32_MAX = 2147483647

# opcodes (src_ext/cesql.pyx has the same numbers; it checks them on import)
PUSH = 1
LOAD = 2
EXISTS = 3
NOT = 4
NEGATE = 5
LIKE = 6
ARITH = 7
COMPARE = 8
LOGIC = 9
LOGIC2 = 10
IN = 11
CALL = 12
NOFUNC = 13

# operators (the ``a`` of ARITH, COMPARE, LOGIC and LOGIC2)
ADD, SUB, MUL, DIV, MOD = 1, 2, 3, 4, 5
EQ, NE, LT, LE, GT, GE = 1, 2, 3, 4, 5, 6
AND, OR, XOR = 1, 2, 3

# type codes: the static types of the language (0: unknown, a lone attribute)
T_ANY = 0
T_STRING = 1
T_INTEGER = 2
T_BOOLEAN = 3

ZERO = {T_ANY: False, T_STRING: "", T_INTEGER: 0, T_BOOLEAN: False}

ARITH_SYMBOL = {ADD: "+", SUB: "-", MUL: "*", DIV: "/", MOD: "%"}

# Unicode White_Space (the property TRIM uses, spec 3.5.1); str.strip()
# would also remove U+001C..U+001F, which are not White_Space.
WHITESPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004"
              "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")

_INT_TEXT = re.compile(r"[+-]?[0-9]+\Z", re.ASCII)


def type_of(value):
    """The type code of a value (bool before int: bool is an int)."""
    if type(value) is bool:
        return T_BOOLEAN
    if type(value) is int:
        return T_INTEGER
    return T_STRING


# -- errors (one place for their messages) ----------------------------------

def cast_error(value, target):
    """The CastError of a String ``value`` that does not cast to ``target``."""
    if target == T_INTEGER:
        if _INT_TEXT.match(value):
            return CastError("cannot cast {!r} to Integer: outside "
                             "-2147483648..2147483647".format(value))
        return CastError("cannot cast {!r} to Integer: not a base 10 integer".format(value))
    return CastError("cannot cast {!r} to Boolean: expected 'true' or 'false'".format(value))


def missing_attribute(name):
    return MissingAttributeError("missing attribute {!r}".format(name))


def missing_function(message):
    return MissingFunctionError(message)


def math_error(op, x, y):
    """The MathError of ``x op y`` (``op`` an ARITH operator; a zero ``y``
    of DIV or MOD, else an overflow)."""
    symbol = ARITH_SYMBOL[op]
    if y == 0 and (op == DIV or op == MOD):
        return MathError("{} by zero: {} {} 0".format(
            "division" if op == DIV else "remainder", x, symbol))
    r = {ADD: x + y, SUB: x - y, MUL: x * y, DIV: _div(x, y), MOD: _mod(x, y)}[op]
    return MathError("integer overflow: {} {} {} is {}".format(x, symbol, y, r))


def negate_error():
    return MathError("integer overflow: -(-2147483648)")


# -- casting (spec 3.7) -----------------------------------------------------

def cast(value, target):
    """``(value cast to target, error or None)``; on failure the zero value
    of ``target``."""
    t = type_of(value)
    if t == target or target == T_ANY:
        return value, None
    if target == T_STRING:
        if t == T_BOOLEAN:
            return ("true" if value else "false"), None
        return str(value), None
    if target == T_INTEGER:
        if t == T_BOOLEAN:
            return (1 if value else 0), None
        if _INT_TEXT.match(value):
            n = int(value)
            if INT32_MIN <= n <= INT32_MAX:
                return n, None
        return 0, cast_error(value, target)
    # target is Boolean
    if t == T_INTEGER:
        return value != 0, None
    low = value.lower()
    if low == "true":
        return True, None
    if low == "false":
        return False, None
    return False, cast_error(value, target)


def attribute_value(v):
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


def _div(x, y):
    """Integer division rounded towards 0."""
    q = abs(x) // abs(y)
    return q if (x < 0) == (y < 0) else -q


def _mod(x, y):
    """Remainder with the sign of ``x``."""
    r = abs(x) % abs(y)
    return -r if x < 0 else r


def arith(op, x, y):
    """``(x op y, error or None)`` on Integers: 0 and a MathError on a zero
    divisor or a result outside 32 bits."""
    if op == ADD:
        r = x + y
    elif op == SUB:
        r = x - y
    elif op == MUL:
        r = x * y
    elif y == 0:
        return 0, math_error(op, x, y)
    elif op == DIV:
        r = _div(x, y)
    else:
        r = _mod(x, y)
    if not INT32_MIN <= r <= INT32_MAX:
        return 0, math_error(op, x, y)
    return r, None


# -- built-in functions (spec 3.5) -----------------------------------------
# Each body takes its arguments already cast and returns (value, error or None).

def _fn_length(x):
    return len(x), None


def _fn_lower(x):
    return x.lower(), None


def _fn_upper(x):
    return x.upper(), None


def _fn_trim(x):
    return x.strip(WHITESPACE), None


def _fn_left(x, y):
    if y < 0:
        return x, FunctionEvaluationError(
            "LEFT: the length must not be negative, got {}".format(y))
    return x[:y], None


def _fn_right(x, y):
    if y < 0:
        return x, FunctionEvaluationError(
            "RIGHT: the length must not be negative, got {}".format(y))
    return (x[len(x) - y:] if y < len(x) else x), None


def _substring_start(x, pos):
    """The 0-based start for SUBSTRING, or an error if ``pos`` is outside
    the string."""
    n = len(x)
    if pos > n or pos < -n:
        return None, FunctionEvaluationError(
            "SUBSTRING: position {} is outside a string of length {}".format(pos, n))
    return (pos - 1 if pos > 0 else n + pos), None


def _fn_substring2(x, pos):
    start, error = _substring_start(x, pos)
    if error is not None:
        return "", error
    return ("" if pos == 0 else x[start:]), None


def _fn_substring3(x, pos, length):
    start, error = _substring_start(x, pos)
    if error is not None:
        return "", error
    if length < 0:
        return "", FunctionEvaluationError(
            "SUBSTRING: the length must not be negative, got {}".format(length))
    return ("" if pos == 0 else x[start:start + length]), None


def _fn_abs(x):
    if x == INT32_MIN:
        return INT32_MAX, MathError("ABS(-2147483648) overflows; the result is 2147483647")
    return abs(x), None


def _fn_same(x):
    return x, None


def _fn_concat(*xs):
    return "".join(xs), None


def _fn_concat_ws(sep, *xs):
    return sep.join(xs), None


S, N, B = T_STRING, T_INTEGER, T_BOOLEAN   # String, Integer (a number), Boolean

# name -> {arity: (params, return type, body)}
FUNCTIONS = {
    "LENGTH": {1: ((S,), N, _fn_length)},
    "LOWER": {1: ((S,), S, _fn_lower)},
    "UPPER": {1: ((S,), S, _fn_upper)},
    "TRIM": {1: ((S,), S, _fn_trim)},
    "LEFT": {2: ((S, N), S, _fn_left)},
    "RIGHT": {2: ((S, N), S, _fn_right)},
    "SUBSTRING": {2: ((S, N), S, _fn_substring2), 3: ((S, N, N), S, _fn_substring3)},
    "ABS": {1: ((N,), N, _fn_abs)},
    "INT": {1: ((N,), N, _fn_same)},
    "BOOL": {1: ((B,), B, _fn_same)},
    "STRING": {1: ((S,), S, _fn_same)},
}

# name -> (fixed params, variadic type, return type, body), for arities >=
# len(fixed) that have no fixed definition
VARIADIC = {
    "CONCAT": ((), S, S, _fn_concat),
    "CONCAT_WS": ((S,), S, S, _fn_concat_ws),
}


def dispatch(name, arity):
    """``(parameter types, return type, body)`` for a call, or None."""
    fixed = FUNCTIONS.get(name)
    if fixed is not None and arity in fixed:
        return fixed[arity]
    variadic = VARIADIC.get(name)
    if variadic is not None and arity >= len(variadic[0]):
        params, rest, ret, body = variadic
        return (params + (rest,) * (arity - len(params)), ret, body)
    return None
