"""CESQL v1.0 (fastflow.cesql): the TCK of the CloudEvents spec repository
(cesql/cesql_tck/*.yaml) as a table of our own, then one test per statement
of the spec (cesql/spec.md) that the TCK leaves open, the error model, the
parser's messages and filtering real fastflow.Event objects.  Every test
runs once per core's evaluator (the ``evaluator`` fixture); the two are
compared on random expressions in test_cesql_core.py."""


import base64
import datetime as dt
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastflow
from fastflow import cesql
from fastflow.cesql import (
    CastError,
    CesqlParseError,
    FunctionEvaluationError,
    MathError,
    MissingAttributeError,
    MissingFunctionError,
)
from fastflow.errors import FastflowError

from conftest import CORES


@pytest.fixture(autouse=True, params=list(CORES), ids=list(CORES))
def evaluator(request, monkeypatch):
    """The core whose CesqlProgram evaluates the compiled expressions."""
    monkeypatch.setattr(cesql, "CesqlProgram", CORES[request.param].CesqlProgram)
    return CORES[request.param]

# -- the TCK ------------------------------------------------------------------------------
# Each row: (TCK case name, expression, input event or None, result, error kind).  The
# input is the TCK's ``event`` (full(...)) or its ``eventOverrides`` on top of a valid
# event (over(...)); None is "any valid event".  Error kinds are the TCK's names, the
# ``kind`` of our EvaluationError classes; "parse" is a CesqlParseError from compile().

ANY_EVENT = {"specversion": "1.0", "id": "anyId", "source": "/any", "type": "any.type"}


def full(attributes):
    return dict(attributes)


def over(attributes):
    return {**ANY_EVENT, **attributes}


EVENT_LOCALHOST = {"specversion": "1.0", "id": "myId", "source": "localhost.localdomain",
                   "type": "myType"}
EVENT_REQUIRED = {"specversion": "1.0", "id": "myId", "source": "http://localhost/source",
                  "type": "myType"}
EVENT_WITH_TIME = {**EVENT_REQUIRED, "time": "2018-04-26T14:48:09+02:00"}
EVENT_WITH_MYEXT = {**EVENT_REQUIRED, "myext": "my value"}
EVENT_MYEXT_IS_SOURCE = {**EVENT_REQUIRED, "myext": "http://localhost/source"}

NAMES_EXAMPLE = ("(firstname = 'Francesco' AND lastname = 'Guardiani') "
                 "OR subject = 'Francesco Guardiani'")
DNF = ("(id = 'myId' AND type LIKE '%.success') "
       "OR (id = 'notmyId' AND source LIKE 'http://%' AND type LIKE '%.warning')")
CNF = ("(id = 'myId' OR type LIKE '%.success') "
       "AND (id = 'notmyId' OR source LIKE 'https://%' OR type LIKE '%.warning')")
CNF_WITH_MYEXT = CNF + " AND (myext = 'customext')"

TCK = {
    'binary_comparison_operators': [
        ('True is equal to false', 'TRUE = FALSE', None, False, None),
        ('False is equal to false', 'FALSE = FALSE', None, True, None),
        ('1 is equal to 2', '1 = 2', None, False, None),
        ('2 is equal to 2', '2 = 2', None, True, None),
        ('abc is equal to 123', "'abc' = '123'", None, False, None),
        ('abc is equal to abc', "'abc' = 'abc'", None, True, None),
        ('Equals operator returns false when encountering a missing attribute',
         'missing = 2', None, False, 'missingAttribute'),
        ('True is not equal to false', 'TRUE != FALSE', None, True, None),
        ('False is not equal to false', 'FALSE != FALSE', None, False, None),
        ('1 is not equal to 2', '1 != 2', None, True, None),
        ('2 is not equal to 2', '2 != 2', None, False, None),
        ('abc is not equal to 123', "'abc' != '123'", None, True, None),
        ('abc is not equal to abc', "'abc' != 'abc'", None, False, None),
        ('Not equal operator returns false when encountering a missing attribute',
         'missing != 2', None, False, 'missingAttribute'),
        ('True is not equal to false (diamond operator)', 'TRUE <> FALSE', None, True, None),
        ('False is not equal to false (diamond operator)', 'FALSE <> FALSE', None, False, None),
        ('1 is not equal to 2 (diamond operator)', '1 <> 2', None, True, None),
        ('2 is not equal to 2 (diamond operator)', '2 <> 2', None, False, None),
        ('abc is not equal to 123 (diamond operator)', "'abc' <> '123'", None, True, None),
        ('abc is not equal to abc (diamond operator)', "'abc' <> 'abc'", None, False, None),
        ('Diamond operator returns false when encountering a missing attribute',
         'missing <> 2', None, False, 'missingAttribute'),
        ('1 is less or equal than 2', '2 <= 2', None, True, None),
        ('3 is less or equal than 2', '3 <= 2', None, False, None),
        ('1 is less than 2', '1 < 2', None, True, None),
        ('2 is less than 2', '2 < 2', None, False, None),
        ('2 is greater or equal than 2', '2 >= 2', None, True, None),
        ('2 is greater or equal than 3', '2 >= 3', None, False, None),
        ('2 is greater than 1', '2 > 1', None, True, None),
        ('2 is greater than 2', '2 > 2', None, False, None),
        ('Less than or equal operator returns false when encountering a missing attribute',
         'missing <= 2', None, False, 'missingAttribute'),
        ('implicit casting with string as right type', "true = 'TRUE'", None, False, None),
        ('implicit casting with boolean as right type', "'TRUE' = true", None, True, None),
    ],
    'binary_logical_operators': [
        ('False and false', 'FALSE AND FALSE', None, False, None),
        ('False and true', 'FALSE AND TRUE', None, False, None),
        ('True and false', 'TRUE AND FALSE', None, False, None),
        ('True and true', 'TRUE AND TRUE', None, True, None),
        ('AND operator is short circuit evaluated', 'false and (1 != 1 / 0)', None, False, None),
        ('AND operator is NOT short circuit evaluated when the first operand evaluates to true',
         'true and (1 != 1 / 0)', None, False, 'math'),
        ('False or false', 'FALSE OR FALSE', None, False, None),
        ('False or true', 'FALSE OR TRUE', None, True, None),
        ('True or false', 'TRUE OR FALSE', None, True, None),
        ('True or true', 'TRUE OR TRUE', None, True, None),
        ('OR operator is short circuit evaluated', 'true or (1 != 1 / 0)', None, True, None),
        ('OR operator is NOT short circuit evaluated when the first operand evaluates to false',
         'false or (1 != 1 / 0)', None, False, 'math'),
        ('False xor false', 'FALSE XOR FALSE', None, False, None),
        ('False xor true', 'FALSE XOR TRUE', None, True, None),
        ('True xor false', 'TRUE XOR FALSE', None, True, None),
        ('True xor true', 'TRUE XOR TRUE', None, False, None),
    ],
    'binary_math_operators': [
        ('Operator precedence without parenthesis', '4 * 2 + 4 / 2', None, 10, None),
        ('Operator precedence with parenthesis', '4 * (2 + 4) / 2', None, 12, None),
        ('Truncated division', '5 / 3', None, 1, None),
        ('Division by zero returns 0 and fail', '5 / 0', None, 0, 'math'),
        ('Module', '5 % 2', None, 1, None),
        ('Module by zero returns 0 and fail', '5 % 0', None, 0, 'math'),
        ('Missing attribute in division results in missing attribute error, not divide by 0 error',
         'missing / 0', None, 0, 'missingAttribute'),
        ('Missing attribute in modulo results in missing attribute error, not divide by 0 error',
         'missing % 0', None, 0, 'missingAttribute'),
        ('Positive plus positive number', '4 + 1', None, 5, None),
        ('Negative plus positive number', '-4 + 1', None, -3, None),
        ('Negative plus Negative number', '-4 + -1', None, -5, None),
        ('Positive plus negative number', '4 + -1', None, 3, None),
        ('Positive minus positive number', '4 - 1', None, 3, None),
        ('Negative minus positive number', '-4 - 1', None, -5, None),
        ('Implicit casting, with left value string', "'5' + 3", None, 8, None),
        ('Implicit casting, with right value string', "5 + '3'", None, 8, None),
        ('Implicit casting, with both values string', "'5' + '3'", None, 8, None),
        ('Implicit casting, with boolean value', '5 + TRUE', None, 6, None),
    ],
    'case_sensitivity': [
        ('TRUE', 'TRUE', None, True, None),
        ('true', 'true', None, True, None),
        ('tRuE', 'tRuE', None, True, None),
        ('FALSE', 'FALSE', None, False, None),
        ('false', 'false', None, False, None),
        ('FaLsE', 'FaLsE', None, False, None),
        ('String literals casing preserved', "'aBcD'", None, 'aBcD', None),
    ],
    'casting_functions': [
        ("Cast '1' to integer", "INT('1')", None, 1, None),
        ("Cast '-1' to integer", "INT('-1')", None, -1, None),
        ('Cast identity 1', 'INT(1)', None, 1, None),
        ('Cast identity -1', 'INT(-1)', None, -1, None),
        ('Cast from TRUE to int', 'INT(TRUE)', None, 1, None),
        ('Cast from FALSE to int', 'INT(FALSE)', None, 0, None),
        ('Invalid cast from string to int', "INT('ABC')", None, 0, 'cast'),
        ("Cast 'TRUE' to boolean", "BOOL('TRUE')", None, True, None),
        ('Cast "false" to boolean', 'BOOL("false")', None, False, None),
        ('Cast identity TRUE', 'BOOL(TRUE)', None, True, None),
        ('Cast identity FALSE', 'BOOL(FALSE)', None, False, None),
        ('Invalid cast from string to boolean', "BOOL('ABC')", None, False, 'cast'),
        ('Cast from 1 to boolean', 'BOOL(1)', None, True, None),
        ('Cast from 0 to boolean', 'BOOL(0)', None, False, None),
        ('Cast from 100 to boolean', 'BOOL(100)', None, True, None),
        ('Cast from -50 to boolean', 'BOOL(-50)', None, True, None),
        ('Cast TRUE to string', 'STRING(TRUE)', None, 'true', None),
        ('Cast FALSE to string', 'STRING(FALSE)', None, 'false', None),
        ('Cast 1 to string', 'STRING(1)', None, '1', None),
        ('Cast -1 to string', 'STRING(-1)', None, '-1', None),
        ('Cast identity "abc"', 'STRING("abc")', None, 'abc', None),
    ],
    'context_attributes_access': [
        ('Access to required attribute', 'id', over({'id': 'myId'}), 'myId', None),
        ('Access to optional attribute',
         'subject', over({'subject': 'mySubject'}), 'mySubject', None),
        ('Absent optional attribute', 'subject', full(EVENT_LOCALHOST), False, 'missingAttribute'),
        ('Access to optional boolean extension', 'mybool', over({'mybool': True}), True, None),
        ('Access to optional integer extension', 'myint', over({'myint': 10}), 10, None),
        ('Access to optional string extension',
         'myext', over({'myext': 'my extension'}), 'my extension', None),
        ('URL type cohercion to string',
         'source', full(EVENT_REQUIRED), 'http://localhost/source', None),
        ('Timestamp type cohercion to string',
         'time', full(EVENT_WITH_TIME), '2018-04-26T14:48:09+02:00', None),
    ],
    'exists_expression': [
        ('required attributes always exist',
         'EXISTS specversion AND EXISTS id AND EXISTS type AND EXISTS SOURCE', None, True, None),
        ('optional attribute available', 'EXISTS time', full(EVENT_WITH_TIME), True, None),
        ('optional attribute absent', 'EXISTS time', full(EVENT_REQUIRED), False, None),
        ('optional attribute absent (negated)',
         'NOT EXISTS time', full(EVENT_REQUIRED), True, None),
        ('optional extension available', 'EXISTS myext', full(EVENT_WITH_MYEXT), True, None),
        ('optional extension absent', 'EXISTS myext', full(EVENT_REQUIRED), False, None),
        ('optional extension absent (negated)',
         'NOT EXISTS myext', full(EVENT_REQUIRED), True, None),
    ],
    'in_expression': [
        ('int in int set', '123 IN (1, 2, 3, 12, 13, 23, 123)', None, True, None),
        ('int not in int set', '123 NOT IN (1, 2, 3, 12, 13, 23, 123)', None, False, None),
        ('string in string set', '\'abc\' IN (\'abc\', "bcd")', None, True, None),
        ('string not in string set', '\'aaa\' IN (\'abc\', "bcd")', None, False, None),
        ('bool in bool set', 'TRUE IN (TRUE, FALSE)', None, True, None),
        ('bool not in bool set', 'TRUE IN (FALSE)', None, False, None),
        ('mix literals and identifiers (1)',
         "source IN (myext, 'abc')", full(EVENT_MYEXT_IS_SOURCE), True, None),
        ('mix literals and identifiers (2)',
         'source IN (source)', full(EVENT_MYEXT_IS_SOURCE), True, None),
        ('mix literals and identifiers (3)',
         'source IN (id, "http://localhost/source")', full(EVENT_MYEXT_IS_SOURCE), True, None),
        ('mix literals and identifiers (4)',
         "source IN (id, 'xyz')", full(EVENT_REQUIRED), False, None),
        ('type coercion with booleans (1)', "'true' IN (TRUE, 'false')", None, True, None),
        ('type coercion with booleans (2)', "'true' IN ('TRUE', 'false')", None, False, None),
        ('type coercion with booleans (3)', "TRUE IN ('true', 'false')", None, True, None),
        ('type coercion with booleans (4)', "'TRUE' IN (TRUE, 'false')", None, False, None),
        ('type coercion with int (1)', "1 IN ('1', '2')", None, True, None),
        ('type coercion with int (2)', "'1' IN (1, 2)", None, True, None),
    ],
    'integer_builtin_functions': [
        ('ABS (1)', 'ABS(10)', None, 10, None),
        ('ABS (2)', 'ABS(-10)', None, 10, None),
        ('ABS (3)', 'ABS(0)', None, 0, None),
        ('ABS overflow', 'ABS(-2147483648)', None, 2147483647, 'math'),
    ],
    'like_expression': [
        ('Exact match (1)', "'abc' LIKE 'abc'", None, True, None),
        ('Exact match (2)', "'ab\\c' LIKE 'ab\\c'", None, True, None),
        ('Exact match (negate)', "'abc' NOT LIKE 'abc'", None, False, None),
        ('Percentage operator (1)', "'abc' LIKE 'a%b%c'", None, True, None),
        ('Percentage operator (2)', "'azbc' LIKE 'a%b%c'", None, True, None),
        ('Percentage operator (3)', "'azzzbzzzc' LIKE 'a%b%c'", None, True, None),
        ('Percentage operator (4)', "'a%b%c' LIKE 'a%b%c'", None, True, None),
        ('Percentage operator (5)', "'ac' LIKE 'abc'", None, False, None),
        ('Percentage operator (6)', "'' LIKE 'abc'", None, False, None),
        ('Percentage operator (7)', "'.ab.cde.' LIKE '.%.%.'", None, True, None),
        ('Percentage operator (8)', "'ab.cde' LIKE '.%.%.'", None, False, None),
        ('Underscore operator (1)', "'abc' LIKE 'a_b_c'", None, False, None),
        ('Underscore operator (2)', "'a_b_c' LIKE 'a_b_c'", None, True, None),
        ('Underscore operator (3)', "'abzc' LIKE 'a_b_c'", None, False, None),
        ('Underscore operator (4)', "'azbc' LIKE 'a_b_c'", None, False, None),
        ('Underscore operator (5)', "'azbzc' LIKE 'a_b_c'", None, True, None),
        ('Underscore operator (6)', "'.a.b.' LIKE '._._.'", None, True, None),
        ('Underscore operator (7)', "'abcd.' LIKE '._._.'", None, False, None),
        ('Escaped underscore wildcards (1)', "'a_b_c' LIKE 'a\\_b\\_c'", None, True, None),
        ('Escaped underscore wildcards (2)', "'a_b_c' NOT LIKE 'a\\_b\\_c'", None, False, None),
        ('Escaped underscore wildcards (3)', "'azbzc' LIKE 'a\\_b\\_c'", None, False, None),
        ('Escaped underscore wildcards (4)', "'abc' LIKE 'a\\_b\\_c'", None, False, None),
        ('Escaped percentage wildcards (1)', "'abc' LIKE 'a\\%b\\%c'", None, False, None),
        ('Escaped percentage wildcards (2)', "'a%b%c' LIKE 'a\\%b\\%c'", None, True, None),
        ('Escaped percentage wildcards (3)', "'azbzc' LIKE 'a\\%b\\%c'", None, False, None),
        ('Escaped percentage wildcards (4)', "'abc' LIKE 'a\\%b\\%c'", None, False, None),
        ('With access to event attributes',
         "myext LIKE 'abc%123\\%456\\_d_f'", over({'myext': 'abc123123%456_dzf'}), True, None),
        ('With access to event attributes (negated)',
         "myext NOT LIKE 'abc%123\\%456\\_d_f'", over({'myext': 'abc123123%456_dzf'}), False, None),
        ('With type coercion from int (1)', "234 LIKE '23_'", None, True, None),
        ('With type coercion from int (2)', "2344 LIKE '23%'", None, True, None),
        ('With type coercion from int (3)', "2344 LIKE '23_'", None, False, None),
        ('With type coercion from bool (1)', "TRUE LIKE 'tr%'", None, True, None),
        ('With type coercion from bool (2)', "TRUE LIKE '%ue'", None, True, None),
        ('With type coercion from bool (3)', "FALSE LIKE 'tr%'", None, False, None),
        ('With type coercion from bool (4)', "FALSE LIKE 'fal%'", None, True, None),
        ('Invalid string literal in comparison causes parse error',
         'x LIKE 123', over({'x': '123'}), False, 'parse'),
        ('Missing attribute returns empty string',
         "missing LIKE 'missing'", None, False, 'missingAttribute'),
    ],
    'literals': [
        ('TRUE literal', 'TRUE', None, True, None),
        ('FALSE literal', 'FALSE', None, False, None),
        ('0 literal', '0', None, 0, None),
        ('1 literal', '1', None, 1, None),
        ('String literal single quoted', "'abc'", None, 'abc', None),
        ('String literal double quoted', '"abc"', None, 'abc', None),
        ('String literal single quoted with case', "'aBc'", None, 'aBc', None),
        ('String literal double quoted with case', '"AbC"', None, 'AbC', None),
        ('Escaped string literal (1)', '\'a"b\\\'c\'', None, 'a"b\'c', None),
        ('Escaped string literal (2)', '"a\'b\\"c"', None, 'a\'b"c', None),
    ],
    'negate_operator': [
        ('Minus 10', '-10', None, -10, None),
        ('Minus minus 10', '--10', None, 10, None),
        ('Minus 10 with casting', "-'10'", None, -10, None),
        ('Minus minus 10 with casting', "--'10'", None, 10, None),
        ('Minus with boolean cast', '-TRUE', None, -1, None),
        ('Minus with missing attribute', '-missing', None, 0, 'missingAttribute'),
    ],
    'not_operator': [
        ('Not true', 'NOT TRUE', None, False, None),
        ('Not false', 'NOT FALSE', None, True, None),
        ('Not true with casting', "NOT 'TRUE'", None, False, None),
        ('Not false 10 with casting', "NOT 'FALSE'", None, True, None),
        # The TCK still expects true with a CastError, from the drafts where
        # Integer -> Boolean was no cast; spec 1.0 (3.7) makes it one (10 is
        # true), so NOT 10 is false without an error.
        ('Invalid int cast', 'NOT 10', None, False, None),
        ('Not missing attribute', 'NOT missing', None, False, 'missingAttribute'),
    ],
    'parse_errors': [
        ('No closed parenthesis', 'ABC(', None, None, 'parse'),
    ],
    'spec_examples': [
        ('Case insensitive hops (1)',
         'int(hop) < int(ttl) and int(hop) < 1000', over({'hop': '5', 'ttl': '10'}), True, None),
        ('Case insensitive hops (2)',
         'INT(hop) < INT(ttl) AND INT(hop) < 1000', over({'hop': '5', 'ttl': '10'}), True, None),
        ('Case insensitive hops (3)', 'hop < ttl', over({'hop': '5', 'ttl': '10'}), True, None),
        ('Equals with casting (1)', 'sequence = 5', over({'sequence': '5'}), True, None),
        ('Equals with casting (2)', 'sequence = 5', over({'sequence': '6'}), False, None),
        ('Logic expression (1)',
         "firstname = 'Francesco' OR subject = 'Francesco'",
         over({'subject': 'Francesco', 'firstname': 'Doug'}),
         True, None),
        ('Logic expression (2)',
         "firstname = 'Francesco' OR subject = 'Francesco'",
         over({'firstname': 'Francesco', 'subject': 'Doug'}),
         True, None),
        ('Logic expression (3)',
         NAMES_EXAMPLE,
         over({'subject': 'Doug', 'firstname': 'Francesco', 'lastname': 'Guardiani'}),
         True, None),
        ('Logic expression (4)',
         NAMES_EXAMPLE,
         over({'subject': 'Francesco Guardiani', 'firstname': 'Doug', 'lastname': 'Davis'}),
         True, None),
        ('Subject exists', 'EXISTS subject', over({'subject': 'Francesco Guardiani'}), True, None),
        ('Missing attribute (1)', 'true AND (missing = "")', None, False, 'missingAttribute'),
        ('Missing attribute (2)', 'missing * 5', None, 0, 'missingAttribute'),
        ('Missing attribute (3)', '1 / missing', None, 0, 'missingAttribute'),
    ],
    'string_builtin_functions': [
        ('LENGTH (1)', "LENGTH('abc')", None, 3, None),
        ('LENGTH (2)', "LENGTH('')", None, 0, None),
        ('LENGTH (3)', "LENGTH('2')", None, 1, None),
        ('LENGTH (4)', 'LENGTH(TRUE)', None, 4, None),
        ('CONCAT (1)', "CONCAT('a', 'b', 'c')", None, 'abc', None),
        ('CONCAT (2)', 'CONCAT()', None, '', None),
        ('CONCAT (3)', "CONCAT('a')", None, 'a', None),
        ('CONCAT_WS (1)', "CONCAT_WS(',', 'a', 'b', 'c')", None, 'a,b,c', None),
        ('CONCAT_WS (2)', "CONCAT_WS(',')", None, '', None),
        ('CONCAT_WS (3)', "CONCAT_WS(',', 'a')", None, 'a', None),
        ("CONCAT_WS without arguments doesn't exist",
         'CONCAT_WS()', None, False, 'missingFunction'),
        ('LOWER (1)', "LOWER('ABC')", None, 'abc', None),
        ('LOWER (2)', "LOWER('AbC')", None, 'abc', None),
        ('LOWER (3)', "LOWER('abc')", None, 'abc', None),
        ('UPPER (1)', "UPPER('ABC')", None, 'ABC', None),
        ('UPPER (2)', "UPPER('AbC')", None, 'ABC', None),
        ('UPPER (3)', "UPPER('abc')", None, 'ABC', None),
        ('TRIM (1)', "TRIM('   a b c   ')", None, 'a b c', None),
        ('TRIM (2)', "TRIM('   a b c')", None, 'a b c', None),
        ('TRIM (3)', "TRIM('a b c   ')", None, 'a b c', None),
        ('TRIM (4)', "TRIM('a b c')", None, 'a b c', None),
        ('LEFT (1)', "LEFT('abc', 2)", None, 'ab', None),
        ('LEFT (2)', "LEFT('abc', 10)", None, 'abc', None),
        ('LEFT (3)', "LEFT('', 0)", None, '', None),
        ('LEFT (4)', "LEFT('abc', -2)", None, 'abc', 'functionEvaluation'),
        ('RIGHT (1)', "RIGHT('abc', 2)", None, 'bc', None),
        ('RIGHT (2)', "RIGHT('abc', 10)", None, 'abc', None),
        ('RIGHT (3)', "RIGHT('', 0)", None, '', None),
        ('RIGHT (4)', "RIGHT('abc', -2)", None, 'abc', 'functionEvaluation'),
        ('SUBSTRING (1)', "SUBSTRING('abcdef', 1)", None, 'abcdef', None),
        ('SUBSTRING (2)', "SUBSTRING('abcdef', 2)", None, 'bcdef', None),
        ('SUBSTRING (3)', "SUBSTRING('Quadratically', 5)", None, 'ratically', None),
        ('SUBSTRING (4)', "SUBSTRING('Sakila', -3)", None, 'ila', None),
        ('SUBSTRING (5)', "SUBSTRING('abcdef', 1, 6)", None, 'abcdef', None),
        ('SUBSTRING (6)', "SUBSTRING('abcdef', 2, 4)", None, 'bcde', None),
        ('SUBSTRING (7)', "SUBSTRING('Sakila', -5, 3)", None, 'aki', None),
        ('SUBSTRING (8)', "SUBSTRING('Quadratically', 0)", None, '', None),
        ('SUBSTRING (9)', "SUBSTRING('Quadratically', 0, 1)", None, '', None),
        ('SUBSTRING (10)', "SUBSTRING('abcdef', 10)", None, '', 'functionEvaluation'),
        ('SUBSTRING (11)', "SUBSTRING('abcdef', -10)", None, '', 'functionEvaluation'),
        ('SUBSTRING (12)', "SUBSTRING('abcdef', 10, 10)", None, '', 'functionEvaluation'),
        ('SUBSTRING (13)', "SUBSTRING('abcdef', -10, 10)", None, '', 'functionEvaluation'),
    ],
    'sub_expression': [
        ('Sub expression with literal', '(TRUE)', None, True, None),
        ('Math (1)', '4 * (2 + 3)', None, 20, None),
        ('Math (2)', '(2 + 3) * 4', None, 20, None),
    ],
    'subscriptions_api_recreations': [
        ('Prefix filter (1)',
         "source LIKE 'https://%'", over({'source': 'https://example.com'}), True, None),
        ('Prefix filter (2)',
         "source LIKE 'https://%'", over({'source': 'http://example.com'}), False, None),
        ('Prefix filter on string extension',
         "myext LIKE 'custom%'", over({'myext': 'customext'}), True, None),
        ('Prefix filter on missing string extension',
         "myext LIKE 'custom%'", None, False, 'missingAttribute'),
        ('Suffix filter (1)',
         "type like '%.error'", over({'type': 'com.github.error'}), True, None),
        ('Suffix filter (2)',
         "type like '%.error'", over({'type': 'com.github.success'}), False, None),
        ('Suffix filter on string extension',
         "myext LIKE '%ext'", over({'myext': 'customext'}), True, None),
        ('Suffix filter on missing string extension',
         "myext LIKE '%ext'", None, False, 'missingAttribute'),
        ('Exact filter (1)', "id = 'myId'", over({'id': 'myId'}), True, None),
        ('Exact filter  (2)', "id = 'myId'", over({'id': 'notmyId'}), False, None),
        ('Exact filter on string extension',
         "myext = 'customext'", over({'myext': 'customext'}), True, None),
        ('Exact filter on missing string extension',
         "myext = 'customext'", None, False, 'missingAttribute'),
        ('Prefix filter AND Suffix filter (1)',
         "id LIKE 'my%' AND source LIKE '%.ca'",
         over({'id': 'myId', 'source': 'http://www.some-website.ca'}),
         True, None),
        ('Prefix filter AND Suffix filter (2)',
         "id LIKE 'my%' AND source LIKE '%.ca'",
         over({'id': 'myId', 'source': 'http://www.some-website.com'}),
         False, None),
        ('Prefix filter AND Suffix filter (3)',
         "myext LIKE 'custom%' AND type LIKE '%.error'",
         over({'myext': 'customext', 'type': 'com.github.error'}),
         True, None),
        ('Prefix AND Suffix filter (4)',
         "type LIKE 'example.%' AND myext LIKE 'custom%'",
         over({'type': 'example.event.type'}),
         False, 'missingAttribute'),
        ('Prefix OR Suffix filter (1)',
         "id LIKE 'my%' OR source LIKE '%.ca'",
         over({'id': 'myId', 'source': 'http://www.some-website.ca'}),
         True, None),
        ('Prefix OR Suffix filter (2)',
         "id LIKE 'my%' OR source LIKE '%.ca'",
         over({'id': 'myId', 'source': 'http://www.some-website.com'}),
         True, None),
        ('Prefix OR Suffix filter (3)',
         "id LIKE 'my%' OR source LIKE '%.ca'",
         over({'id': 'notmyId', 'source': 'http://www.some-website.ca'}),
         True, None),
        ('Prefix OR Suffix filter (4)',
         "id LIKE 'my%' OR source LIKE '%.ca'",
         over({'id': 'notmyId', 'source': 'http://www.some-website.com'}),
         False, None),
        ('Disjunctive Normal Form (1)',
         DNF, over({'id': 'myId', 'type': 'example.event.success'}), True, None),
        ('Disjunctive Normal Form (2)',
         DNF,
         over({'id': 'notmyId', 'type': 'example.event.warning',
               'source': 'http://localhost.localdomain'}),
         True, None),
        ('Disjunctive Normal Form (3)',
         DNF,
         over({'id': 'notmyId', 'type': 'example.event.warning',
               'source': 'https://localhost.localdomain'}),
         False, None),
        ('Conjunctive Normal Form (1)',
         CNF,
         over({'id': 'myId', 'type': 'example.event.warning',
               'source': 'http://localhost.localdomain'}),
         True, None),
        ('Conjunctive Normal Form (2)',
         CNF,
         over({'id': 'notmyId', 'type': 'example.event.success',
               'source': 'http://localhost.localdomain'}),
         True, None),
        ('Conjunctive Normal Form (3)',
         CNF,
         over({'id': 'notmyId', 'type': 'example.event.warning',
               'source': 'http://localhost.localdomain'}),
         False, None),
        ('Conjunctive Normal Form (4)',
         CNF,
         over({'id': 'myId', 'type': 'example.event.success',
               'source': 'http://localhost.localdomain'}),
         False, None),
        ('Conjunctive Normal Form (5)',
         CNF_WITH_MYEXT,
         over({'id': 'myId', 'type': 'example.event.warning',
               'source': 'http://localhost.localdomain'}),
         False, 'missingAttribute'),
    ],
}


TCK_CASES = [pytest.param(expression, event, result, error, id="{}: {}".format(file, name))
             for file, cases in TCK.items()
             for name, expression, event, result, error in cases]

ZERO = {bool: False, int: 0, str: ""}


def as_event(attributes):
    """A fastflow.Event with exactly these attributes."""
    return fastflow.Event("tck.case", b"", **attributes)


@pytest.fixture(params=["mapping", "event"])
def make_input(request):
    """The input as the mapping itself or as a real fastflow.Event."""
    if request.param == "mapping":
        return dict
    return as_event


@pytest.mark.parametrize("expression, event, result, error", TCK_CASES)
def test_tck(expression, event, result, error, make_input):
    if error == "parse":
        with pytest.raises(CesqlParseError):
            cesql.compile(expression)
        return
    value, errors = cesql.compile(expression).evaluate(make_input(event or ANY_EVENT))
    assert (value, type(value)) == (result, type(result))
    assert [e.kind for e in errors] == ([error] if error else [])


@pytest.mark.parametrize("expression, event, result, error", TCK_CASES)
def test_tck_fail_fast_and_matches(expression, event, result, error):
    if error == "parse":
        return
    compiled = cesql.compile(expression)
    value, errors = compiled.evaluate(event or ANY_EVENT, fail_fast=True)
    if error is None:
        assert (value, errors) == (result, [])
    else:
        # Fail fast (spec 4.1): the zero value of the expression's return type.
        assert (value, type(value)) == (ZERO[type(result)], type(result))
        assert [e.kind for e in errors] == [error]
    assert compiled.matches(event or ANY_EVENT) is (result is True and error is None)


# -- the spec, statement by statement -----------------------------------------------------

def run(expression, event=None, fail_fast=False):
    """(value, [error kinds]) of ``expression`` on ``event`` (any valid event if None)."""
    value, errors = cesql.compile(expression).evaluate(
        ANY_EVENT if event is None else event, fail_fast=fail_fast)
    return value, [e.kind for e in errors]


def check(expression, event, value, kinds=()):
    got, got_kinds = run(expression, event)
    assert (got, type(got)) == (value, type(value)), expression
    assert got_kinds == list(kinds), expression


SPEC_VALUES = [
    # 2: keywords are case-insensitive
    ("true aNd TrUe", None, True),
    ("false oR true", None, True),
    ("true xor true", None, False),
    ("nOt false", None, True),
    ("'abc' like 'A%'", None, False),
    ("'abc' not like 'a%'", None, False),
    ("1 in (1)", None, True),
    ("1 nOt iN (1)", None, False),
    ("exists id", None, True),
    ("ExIsTs nothere", None, False),
    # function names are case-insensitive too (spec 2 example: int(hop))
    ("lower('AB')", None, "ab"),
    ("Concat_Ws('-', 'a', 'b')", None, "a-b"),
    # 2.2 value identifiers: letters and digits, a digit may come first
    ("1abc", {"1abc": "x"}, "x"),
    ("abc1", {"abc1": 7}, 7),
    ("a23456789012345678901234", {"a23456789012345678901234": "long"}, "long"),
    # 2.2 integer literals, signed, 32 bits
    ("2147483647", None, 2147483647),
    ("-2147483648", None, -2147483648),
    ("+5", None, 5),
    ("-0", None, 0),
    ("007", None, 7),
    ("4 -1", None, 3),
    ("4-1", None, 3),
    ("4 - -1", None, 5),
    ("- 10", None, -10),
    # 2.2 string literals: either quote; \' and \" escape the delimiting quote
    ("'it\\'s'", None, "it's"),
    ('"say \\"hi\\""', None, 'say "hi"'),
    ("'a\"b'", None, 'a"b'),
    ('"a\'b"', None, "a'b"),
    ("''", None, ""),
    ('""', None, ""),
    # other backslashes are kept as they are (a LIKE pattern sees \% and \_)
    ("'a\\nb'", None, "a\\nb"),
    ("'a\\\\'", None, "a\\\\"),
    ("'\\\"'", None, '\\"'),
    # Unicode inside strings
    ("'żółw'", None, "żółw"),
    # spaces, tabs, CR and LF separate tokens
    ("\t1\r\n+\n2 ", None, 3),
    # 3.4.2 arithmetic: division truncates towards 0, remainder has the sign of x
    ("7 / 2", None, 3),
    ("-7 / 2", None, -3),
    ("7 / -2", None, -3),
    ("-7 / -2", None, 3),
    ("7 % 3", None, 1),
    ("-7 % 3", None, -1),
    ("7 % -3", None, 1),
    ("-7 % -3", None, -1),
    ("-2147483648 % -1", None, 0),
    ("2147483646 + 1", None, 2147483647),
    ("10 - 4 - 3", None, 3),
    ("100 / 10 / 5", None, 2),
    ("1 + 2 * 3", None, 7),
    ("(1 + 2) * 3", None, 9),
    ("2 * 3 % 4", None, 2),
    # 3.4.2 comparisons of Integers; <, <=, >, >= cast both operands to Integer
    ("'10' < '9'", None, False),
    ("'10' > 9", None, True),
    ("TRUE > FALSE", None, True),
    ("1 < 2 = TRUE", None, True),
    # 3.4.2 String equality is case sensitive
    ("'abc' = 'ABC'", None, False),
    ("'abc' <> 'ABC'", None, True),
    # 3.7 = casts its left operand to the right operand's type
    ("'010' = 10", None, True),
    ("10 = '010'", None, False),
    ("1 = TRUE", None, True),
    ("TRUE = 2", None, False),
    ("2 = TRUE", None, True),
    ("sequence = 10", {"sequence": "010"}, True),
    # 3.7 examples
    ('TRUE = "true" AND FALSE = "false"', None, True),
    ('TRUE = "TRUE" OR FALSE = "FALSE"', None, False),
    # 3.7 casts: String -> Integer accepts a sign; Integer -> String has no leading 0
    ("INT('+12')", None, 12),
    ("INT('-0012')", None, -12),
    ("INT('-2147483648')", None, -2147483648),
    ("STRING(-5)", None, "-5"),
    ("STRING(007)", None, "7"),
    ("BOOL('tRuE')", None, True),
    ("BOOL('FALSE')", None, False),
    ("BOOL(-1)", None, True),
    ("INT(TRUE) + INT(FALSE)", None, 1),
    ("STRING(TRUE) = 'true'", None, True),
    # 3.4.5 IN: the left operand's type is the target type of the elements
    ("1 IN ('01')", None, True),
    ("'01' IN (1)", None, False),
    ("'1' IN (1)", None, True),
    ("TRUE IN ('TRUE')", None, True),
    ("'TRUE' IN (TRUE)", None, False),
    ("2 IN (1, 2, 3)", None, True),
    ("4 NOT IN (1, 2, 3)", None, True),
    ("1 + 1 IN (2)", None, 1),
    # 3.4.3 LIKE: the spec's examples (its '_b*' is read as '_b%': '*' is no wildcard)
    ("'ab' LIKE '_b%'", None, True),
    ("'abc' LIKE '_b%'", None, True),
    ("'abcd1' LIKE '_b%'", None, True),
    ("'b' LIKE '_b%'", None, False),
    ("'acd' LIKE '_b%'", None, False),
    ("'aBc' LIKE '_b%'", None, False),
    ("'ab*' LIKE '_b*'", None, True),
    ("'abc' LIKE '_b*'", None, False),
    ("'abc%' LIKE 'abc\\%'", None, True),
    ("'abcd' LIKE 'abc\\%'", None, False),
    ("'a_' LIKE 'a\\_'", None, True),
    ("'ab' LIKE 'a\\_'", None, False),
    # _ and % are whole characters, newlines included; regex characters are literal
    ("'a\nb' LIKE 'a_b'", None, True),
    ("'a\nb' LIKE 'a%'", None, True),
    ("'żb' LIKE '_b'", None, True),
    ("'a.c' LIKE 'a.c'", None, True),
    ("'abc' LIKE 'a.c'", None, False),
    ("'a+' LIKE 'a+'", None, True),
    ("'aa' LIKE 'a+'", None, False),
    ("'[x]' LIKE '[x]'", None, True),
    ("'' LIKE '%'", None, True),
    ("'' LIKE '_'", None, False),
    ("'abc' LIKE '%%%'", None, True),
    # a backslash before another character is that backslash
    ("'a\\b' LIKE 'a\\b'", None, True),
    # the pattern a\\% is a, a backslash (not before % or _), then an escaped %
    ("'a\\%' LIKE 'a\\\\%'", None, True),
    ("'a\\\\%' LIKE 'a\\\\%'", None, False),
    ("'a\\x' LIKE 'a\\\\%'", None, False),
    # 3.4.3 the left operand is cast to String
    ("10 LIKE '1_'", None, True),
    ("-10 LIKE '-%'", None, True),
    ("FALSE LIKE 'false'", None, True),
    # 3.4.4 EXISTS: the required attributes always exist
    ("EXISTS specversion AND EXISTS id AND EXISTS source AND EXISTS type", None, True),
    ("EXISTS subject", {"subject": "x"}, True),
    ("EXISTS subject", {"subject": None}, False),
    ("EXISTS data", None, False),
    # 3.5.1 string functions
    ("LENGTH('żółw')", None, 4),
    ("LENGTH(12345)", None, 5),
    ("LENGTH(-1)", None, 2),
    ("CONCAT(1, TRUE, 'x')", None, "1truex"),
    ("CONCAT('', '')", None, ""),
    ("CONCAT_WS(0, 1, 2, 3)", None, "10203"),
    ("CONCAT_WS(', ', 'a', '', 'b')", None, "a, , b"),
    ("LOWER('ÀÉ')", None, "àé"),
    ("UPPER('àé')", None, "ÀÉ"),
    ("UPPER(TRUE)", None, "TRUE"),
    ("TRIM('\t\n a \r\x0b\x0c')", None, "a"),
    ("TRIM('\u3000\u00a0a\u2003\u2028')", None, "a"),
    ("TRIM('\x1ca\x1f')", None, "\x1ca\x1f"),
    ("TRIM('\x00a')", None, "\x00a"),
    ("TRIM('')", None, ""),
    ("LEFT('abc', 0)", None, ""),
    ("LEFT('abc', 3)", None, "abc"),
    ("LEFT(12345, '2')", None, "12"),
    ("RIGHT('abc', 0)", None, ""),
    ("RIGHT('abc', 1)", None, "c"),
    ("RIGHT('abc', 3)", None, "abc"),
    ("RIGHT('', 5)", None, ""),
    ("SUBSTRING('abc', 3)", None, "c"),
    ("SUBSTRING('abc', -1)", None, "c"),
    ("SUBSTRING('abc', -3)", None, "abc"),
    ("SUBSTRING('abc', 0)", None, ""),
    ("SUBSTRING('', 0)", None, ""),
    ("SUBSTRING('abc', 2, 0)", None, ""),
    ("SUBSTRING('abc', 2, 1)", None, "b"),
    ("SUBSTRING('abc', 2, 100)", None, "bc"),
    ("SUBSTRING('abc', -2, 1)", None, "b"),
    ("SUBSTRING('abc', -1, 5)", None, "c"),
    ("SUBSTRING('abc', 0, 5)", None, ""),
    ("SUBSTRING(123456, '2', '3')", None, "234"),
    # 3.5.2 ABS
    ("ABS(2147483647)", None, 2147483647),
    ("ABS(-2147483647)", None, 2147483647),
    ("ABS('-5')", None, 5),
    ("ABS(TRUE)", None, 1),
    # 3.6 AND and OR short-circuit: the right operand is not evaluated at all
    ("FALSE AND missing", None, False),
    ("TRUE OR missing", None, True),
    ("FALSE AND 1 / 0 = 0", None, False),
    ("TRUE OR FOO()", None, True),
    ("FALSE AND (FALSE OR missing)", None, False),
]


@pytest.mark.parametrize("expression, event, value", SPEC_VALUES)
def test_spec_values(expression, event, value):
    check(expression, event, value)


SPEC_ERRORS = [
    # 3.2 a missing attribute: the zero value of the subexpression's return type
    ("missing", None, False, ["missingAttribute"]),
    ("missing + 1", None, 0, ["missingAttribute"]),
    ("1 / missing", None, 0, ["missingAttribute"]),
    ("NOT missing", None, False, ["missingAttribute"]),
    ("NOT (missing = 1)", None, False, ["missingAttribute"]),
    ("missing <> 1", None, False, ["missingAttribute"]),
    ("missing IN (1)", None, False, ["missingAttribute"]),
    ("missing NOT IN (1)", None, False, ["missingAttribute"]),
    ("1 IN (missing, 1)", None, False, ["missingAttribute"]),
    ("missing NOT LIKE 'x'", None, False, ["missingAttribute"]),
    ("LENGTH(missing)", None, 0, ["missingAttribute"]),
    ("UPPER(missing)", None, "", ["missingAttribute"]),
    ("LEFT('abc', missing)", None, "", ["missingAttribute"]),
    ("INT(missing)", None, 0, ["missingAttribute"]),
    ("STRING(missing)", None, "", ["missingAttribute"]),
    # IS_BOOL and IS_INT of the pre-1.0 drafts are not 1.0 functions
    ("IS_BOOL('true')", None, False, ["missingFunction"]),
    ("IS_INT(1)", None, False, ["missingFunction"]),
    # an operand's error makes the operator yield its zero value, even where the
    # other operand would decide: OR evaluates its right operand, XOR both
    ("missing OR TRUE", None, False, ["missingAttribute"]),
    ("TRUE XOR missing", None, False, ["missingAttribute"]),
    ("missing AND missing2", None, False, ["missingAttribute"]),
    ("missing OR missing2", None, False, ["missingAttribute", "missingAttribute"]),
    ("missing + missing2", None, 0, ["missingAttribute", "missingAttribute"]),
    ("CONCAT(missing, missing2)", None, "", ["missingAttribute", "missingAttribute"]),
    ("TRUE AND (1 / 0 = 0)", None, False, ["math"]),
    ("NOT (1 / 0 = 0)", None, False, ["math"]),
    ("ABS(-2147483648) + 0", None, 0, ["math"]),
    ("LENGTH(LEFT('abc', -1))", None, 0, ["functionEvaluation"]),
    # 3.4.2 MathError: division and remainder by zero
    ("0 / 0", None, 0, ["math"]),
    ("-5 % 0", None, 0, ["math"]),
    ("5 / (3 - 3)", None, 0, ["math"]),
    # Integer overflow (not fixed by the spec): a MathError with 0
    ("2147483647 + 1", None, 0, ["math"]),
    ("-2147483648 - 1", None, 0, ["math"]),
    ("65536 * 32768", None, 0, ["math"]),
    ("-2147483648 / -1", None, 0, ["math"]),
    ("-(-2147483648)", None, 2147483647, ["math"]),
    ("-ABS(-2147483648)", None, 0, ["math"]),
    ("ABS(-2147483648)", None, 2147483647, ["math"]),
    # 3.7 CastError with the target type's zero value, then the operator's zero value
    ("INT('abc')", None, 0, ["cast"]),
    ("INT('')", None, 0, ["cast"]),
    ("INT(' 1')", None, 0, ["cast"]),
    ("INT('1 ')", None, 0, ["cast"]),
    ("INT('1_000')", None, 0, ["cast"]),
    ("INT('1.0')", None, 0, ["cast"]),
    ("INT('0x10')", None, 0, ["cast"]),
    ("INT('\u0663')", None, 0, ["cast"]),
    ("INT('2147483648')", None, 0, ["cast"]),
    ("INT('-2147483649')", None, 0, ["cast"]),
    ("INT('+')", None, 0, ["cast"]),
    ("BOOL('yes')", None, False, ["cast"]),
    ("BOOL(' true')", None, False, ["cast"]),
    ("BOOL('1')", None, False, ["cast"]),
    ("'abc' + 1", None, 0, ["cast"]),
    ("1 + 'abc'", None, 0, ["cast"]),
    ("'abc' < 5", None, False, ["cast"]),
    ("'abc' = 0", None, False, ["cast"]),
    ("'abc' = TRUE", None, False, ["cast"]),
    ("NOT 'abc'", None, False, ["cast"]),
    ("-'abc'", None, 0, ["cast"]),
    ("'x' AND TRUE", None, False, ["cast"]),
    ("1 IN ('a', 1)", None, False, ["cast"]),
    ("TRUE IN ('yes')", None, False, ["cast"]),
    ("ABS('x')", None, 0, ["cast"]),
    ("LEFT('abc', 'x')", None, "", ["cast"]),
    ("SUBSTRING('abc', 1, 'x')", None, "", ["cast"]),
    # 3.5.1 FunctionEvaluationError with the spec's value
    ("LEFT('abc', -1)", None, "abc", ["functionEvaluation"]),
    ("RIGHT('abc', -1)", None, "abc", ["functionEvaluation"]),
    ("SUBSTRING('abc', 4)", None, "", ["functionEvaluation"]),
    ("SUBSTRING('abc', -4)", None, "", ["functionEvaluation"]),
    ("SUBSTRING('', 1)", None, "", ["functionEvaluation"]),
    ("SUBSTRING('abc', 1, -1)", None, "", ["functionEvaluation"]),
    ("SUBSTRING('abc', 0, -1)", None, "", ["functionEvaluation"]),
    # 3.5 MissingFunctionError: no such name, or no such arity; the value is false
    ("FOO()", None, False, ["missingFunction"]),
    ("IS_STRING('abc')", None, False, ["missingFunction"]),
    ("LENGTH()", None, False, ["missingFunction"]),
    ("LENGTH('a', 'b')", None, False, ["missingFunction"]),
    ("SUBSTRING('abc')", None, False, ["missingFunction"]),
    ("SUBSTRING('abc', 1, 2, 3)", None, False, ["missingFunction"]),
    ("ABS(1, 2)", None, False, ["missingFunction"]),
    ("FOO() + 1", None, 0, ["missingFunction"]),
    ("NOT FOO()", None, False, ["missingFunction"]),
]


@pytest.mark.parametrize("expression, event, value, kinds", SPEC_ERRORS)
def test_spec_errors(expression, event, value, kinds):
    check(expression, event, value, kinds)


@pytest.mark.parametrize("expression, event, value, kinds", SPEC_ERRORS)
def test_fail_fast_stops_at_the_first_error(expression, event, value, kinds):
    # spec 4.1: the zero value of the expression's return type and that error
    got, got_kinds = run(expression, event, fail_fast=True)
    assert (got, type(got)) == (ZERO[type(value)], type(value))
    assert got_kinds == kinds[:1]


def test_short_circuit_does_not_evaluate_the_right_operand():
    # an unevaluated right operand adds no error in either mode
    for mode in (False, True):
        assert run("FALSE AND INT('x') = 1", fail_fast=mode) == (False, [])
        assert run("TRUE OR INT('x') = 1", fail_fast=mode) == (True, [])
        assert run("TRUE AND INT('x') = 1", fail_fast=mode) == (False, ["cast"])
        assert run("FALSE OR INT('x') = 1", fail_fast=mode) == (False, ["cast"])


def test_logic_operators_group_left_to_right():
    # spec 3.6: AND, OR and XOR have one precedence, evaluated left to right
    event = {"a": True, "b": True, "c": False}
    assert run("a OR b AND c", event) == (False, [])
    assert run("a OR (b AND c)", event) == (True, [])
    assert run("c AND a OR b", event) == (True, [])
    assert run("TRUE XOR TRUE OR TRUE", None) == (True, [])
    assert run("TRUE OR TRUE XOR TRUE", None) == (False, [])


PRECEDENCE = [
    # spec 3.6: function calls, then NOT and unary -, then LIKE, EXISTS, IN, then
    # * / %, + -, comparisons, AND OR XOR
    ("NOT a = b", "((NOT a) = b)"),
    ("NOT a LIKE 'x'", "((NOT a) LIKE 'x')"),
    ("NOT a IN (1)", "((NOT a) IN (1))"),
    ("NOT EXISTS a", "(NOT EXISTS a)"),
    ("-a * b", "((-a) * b)"),
    ("-LENGTH(a)", "(-LENGTH(a))"),
    ("NOT -a", "(NOT (-a))"),
    ("a + b LIKE 'x'", "(a + (b LIKE 'x'))"),
    ("a + b IN (1)", "(a + (b IN (1)))"),
    ("a LIKE 'x' IN (TRUE)", "((a LIKE 'x') IN (TRUE))"),
    ("a * b + c", "((a * b) + c)"),
    ("a + b * c", "(a + (b * c))"),
    ("a - b - c", "((a - b) - c)"),
    ("a / b % c", "((a / b) % c)"),
    ("a + b = c", "((a + b) = c)"),
    ("a = b AND c", "((a = b) AND c)"),
    ("a < b = c", "((a < b) = c)"),
    ("a AND b OR c XOR d", "(((a AND b) OR c) XOR d)"),
    ("a AND (b OR c)", "(a AND (b OR c))"),
    ("a NOT LIKE 'x'", "(a NOT LIKE 'x')"),
    ("a NOT IN (1, 'b', c)", "(a NOT IN (1, 'b', c))"),
    ("--1", "(--1)"),
    ("- -1", "(--1)"),
    ("-(a)", "(-a)"),
    ("CONCAT()", "CONCAT()"),
    ("SOURCE", "source"),
    ("'it\\'s'", "'it\\'s'"),
]


@pytest.mark.parametrize("expression, tree", PRECEDENCE)
def test_precedence_as_parsed(expression, tree):
    assert repr(cesql.compile(expression)).endswith(" parsed as {}>".format(tree))


def test_parsed_tree_reads_back_as_the_same_expression():
    for expression, tree in PRECEDENCE:
        assert repr(cesql.compile(tree)).endswith(" parsed as {}>".format(tree)), expression


PARSE_ERRORS = [
    # (expression, position, text in the message)
    ("", 0, "expected an expression, got the end of the expression"),
    ("   ", 3, "expected an expression"),
    ("1 +", 3, "expected an expression, got the end of the expression"),
    ("(1", 2, "expected ')', got the end of the expression"),
    ("1)", 1, "expected an operator or the end of the expression, got operator ')'"),
    ("a b", 2, "got name 'b'"),
    ("ABC(", 4, "expected an expression"),
    ("ABC(1", 5, "expected ',' or ')' in the arguments of ABC"),
    ("ABC(1,)", 6, "expected an expression, got operator ')'"),
    ("x LIKE 123", 7, "expected a string literal as the LIKE pattern, got integer '123'"),
    ("x LIKE y", 7, "expected a string literal as the LIKE pattern, got name 'y'"),
    ("x LIKE ('a')", 7, "string literal as the LIKE pattern"),
    ("x LIKE 'a' || 'b'", 11, "unexpected character '|'"),
    ("x NOT 1", 2, "expected an operator or the end of the expression, got keyword 'NOT'"),
    ("x IN ()", 6, "expected an expression, got operator ')'"),
    ("x IN 1", 5, "expected '(', got integer '1'"),
    ("x IN (1, 2", 10, "expected ',' or ')' in the IN set"),
    ("EXISTS 'a'", 7, "expected an attribute name after EXISTS, got string"),
    ("EXISTS", 6, "expected an attribute name after EXISTS"),
    ("EXISTS LENGTH(a)", 13, "expected an operator or the end of the expression"),
    ("EXISTS a_b", 7, "an attribute name after EXISTS"),
    ("a_b", 0, "expected an attribute name (letters and digits), got name 'a_b'"),
    ("_a", 0, "attribute name"),
    ("f1(1)", 0, "expected a function name (letters and '_'), got name 'f1'"),
    ("NOT", 3, "expected an expression"),
    ("AND", 0, "expected an expression, got keyword 'AND'"),
    ("in = 1", 0, "expected an expression, got keyword 'in'"),
    ("1 == 1", 3, "expected an expression, got operator '='"),
    ("1 ! 1", 2, "unexpected character '!'"),
    ("a.b", 1, "unexpected character '.'"),
    ("a[0]", 1, "unexpected character '['"),
    ("é", 0, "unexpected character 'é'"),
    ("1\u00a0+ 1", 1, "unexpected character '\\xa0'"),
    ("'abc", 0, "at position 0: unterminated string literal"),
    ("x = \"abc", 4, "unterminated string literal"),
    ("'abc\\'", 0, "unterminated string literal"),
    ("'it''s'", 4, "expected an operator or the end of the expression, got string"),
    ("2147483648", 0, "integer literal 2147483648 is outside the 32-bit range"),
    ("-2147483649", 0, "integer literal -2147483649 is outside"),
    ("- 2147483648", 2, "integer literal 2147483648 is outside"),
    ("1 + 99999999999", 4, "outside the 32-bit range"),
    ("+a", 0, "expected an expression, got operator '+'"),
    ("1 + + 1", 4, "expected an expression, got operator '+'"),
]


@pytest.mark.parametrize("expression, position, message", PARSE_ERRORS)
def test_parse_errors(expression, position, message):
    with pytest.raises(CesqlParseError, match="^at position {}: ".format(position)) as info:
        cesql.compile(expression)
    assert message in str(info.value)
    assert info.value.position == position
    assert info.value.expression == expression


def test_parse_error_is_a_fastflow_and_value_error():
    with pytest.raises(FastflowError):
        cesql.compile("1 +")
    with pytest.raises(ValueError, match="expected an expression"):
        cesql.compile("1 +")


def test_compile_takes_a_str():
    with pytest.raises(TypeError, match="expected a str expression, got bytes"):
        cesql.compile(b"1")


ERROR_MESSAGES = [
    ("missing = 1", MissingAttributeError, "missing attribute 'missing'"),
    ("1 / 0", MathError, "division by zero: 1 / 0"),
    ("7 % 0", MathError, "remainder by zero: 7 % 0"),
    ("2147483647 * 2", MathError, "integer overflow: 2147483647 * 2 is 4294967294"),
    ("ABS(-2147483648)", MathError, "ABS(-2147483648) overflows"),
    ("-(-2147483648)", MathError, "integer overflow"),
    ("INT('12a')", CastError, "cannot cast '12a' to Integer: not a base 10 integer"),
    ("INT('99999999999')", CastError, "cannot cast '99999999999' to Integer: outside"),
    ("BOOL('yes')", CastError, "cannot cast 'yes' to Boolean: expected 'true' or 'false'"),
    ("FOO(1)", MissingFunctionError, "unknown function FOO"),
    ("length(1, 2)", MissingFunctionError, "function LENGTH does not take 2 argument(s)"),
    ("LEFT('a', -2)", FunctionEvaluationError, "LEFT: the length must not be negative, got -2"),
    ("RIGHT('a', -3)", FunctionEvaluationError, "RIGHT: the length must not be negative"),
    ("SUBSTRING('abc', 5)", FunctionEvaluationError,
     "SUBSTRING: position 5 is outside a string of length 3"),
    ("SUBSTRING('abc', 1, -1)", FunctionEvaluationError,
     "SUBSTRING: the length must not be negative, got -1"),
]


@pytest.mark.parametrize("expression, cls, message", ERROR_MESSAGES)
def test_error_messages(expression, cls, message):
    _, errors = cesql.compile(expression).evaluate(ANY_EVENT)
    assert len(errors) == 1
    assert type(errors[0]) is cls
    assert isinstance(errors[0], cesql.EvaluationError)
    assert isinstance(errors[0], FastflowError)
    assert message in str(errors[0])


def test_error_kinds_are_the_spec_error_types():
    assert {cls.kind for cls in (MathError, CastError, MissingAttributeError,
                                 MissingFunctionError, FunctionEvaluationError,
                                 cesql.GenericError)} == {
        "math", "cast", "missingAttribute", "missingFunction", "functionEvaluation",
        "generic"}


def test_complete_mode_collects_every_error_in_order():
    value, errors = cesql.compile("a + INT('x') + 1 / 0").evaluate({})
    assert value == 0
    assert [type(e) for e in errors] == [MissingAttributeError, CastError, MathError]
    value, errors = cesql.compile("a + INT('x') + 1 / 0").evaluate({}, fail_fast=True)
    assert (value, [type(e) for e in errors]) == (0, [MissingAttributeError])


def test_missing_function_does_not_evaluate_its_arguments():
    assert run("FOO(missing, 1 / 0)") == (False, ["missingFunction"])


# -- attributes and their types (spec 3.1, 3.2) ------------------------------------------

def test_mapping_values_map_to_cesql_types():
    when = dt.datetime(2024, 6, 13, 12, 30, tzinfo=dt.timezone.utc)
    event = {"s": "x", "i": 5, "b": True, "bin": b"\x00\xff", "big": 2 ** 40,
             "when": when, "none": None, "f": 1.5}
    assert run("s", event) == ("x", [])
    assert run("i + 1", event) == (6, [])
    assert run("b AND TRUE", event) == (True, [])
    assert run("bin", event) == (base64.b64encode(b"\x00\xff").decode(), [])
    assert run("big", event) == ("1099511627776", [])
    assert run("when", event) == ("2024-06-13T12:30:00Z", [])
    assert run("f", event) == ("1.5", [])
    assert run("none", event) == (False, ["missingAttribute"])
    assert run("EXISTS none", event) == (False, [])


def test_event_attributes_map_to_cesql_types():
    when = dt.datetime(2018, 4, 26, 12, 48, 9, tzinfo=dt.timezone.utc)
    event = fastflow.Event("orders.eu", b"{}", source="https://example.com/shop",
                           subject="order-1", time=when, dataschema="https://x/s.json",
                           datacontenttype="application/json",
                           count=3, urgent=True, sig=b"\x01\x02", name="Ada")
    check("source", event, "https://example.com/shop")
    check("type", event, "orders.eu")
    check("specversion", event, "1.0")
    check("id = '{}'".format(event.id), event, True)
    check("time", event, "2018-04-26T12:48:09Z")
    check("time LIKE '2018-04-%'", event, True)
    check("dataschema", event, "https://x/s.json")
    check("datacontenttype", event, "application/json")
    check("subject", event, "order-1")
    check("count * 2", event, 6)
    check("urgent", event, True)
    check("sig", event, base64.b64encode(b"\x01\x02").decode())
    check("name", event, "Ada")
    # data is no attribute (spec 1: the data field is not handled)
    check("EXISTS data", event, False)
    check("data", event, False, ["missingAttribute"])


def test_evaluate_does_not_mutate_the_input():
    event = {"a": "5", "b": None}
    before = dict(event)
    cesql.compile("a + 1 = 6 AND EXISTS b AND c = 1").evaluate(event)
    assert event == before


# -- filtering (spec 1.2) -----------------------------------------------------------------

def test_matches_only_a_boolean_true_without_errors():
    assert cesql.compile("TRUE").matches(ANY_EVENT) is True
    assert cesql.compile("FALSE").matches(ANY_EVENT) is False
    assert cesql.compile("1").matches(ANY_EVENT) is False
    assert cesql.compile("'true'").matches(ANY_EVENT) is False
    assert cesql.compile("mybool").matches({"mybool": True}) is True
    assert cesql.compile("mybool").matches({"mybool": "true"}) is False
    assert cesql.compile("mybool").matches({}) is False
    assert cesql.compile("NOT missing").matches({}) is False
    assert cesql.compile("missing OR TRUE").matches({}) is False
    assert cesql.compile("NOT (1 / 0 = 1)").matches({}) is False


SPEC_EXAMPLES = [
    # spec 5, on real events: (expression, attributes that match, ones that do not)
    ("EXISTS subject", {"subject": "x"}, {}),
    ("firstname = 'Francesco'", {"firstname": "Francesco"}, {"firstname": "francesco"}),
    ("firstname = 'Francesco' OR subject = 'Francesco'",
     {"firstname": "Doug", "subject": "Francesco"}, {"firstname": "Doug", "subject": "Doug"}),
    # an absent attribute is an error, and an error fails the filter
    ("firstname = 'Francesco' OR subject = 'Francesco'", {"firstname": "Francesco"},
     {"subject": "Francesco"}),
    ("(EXISTS firstname AND firstname = 'Francesco') OR subject = 'Francesco'",
     {"subject": "Francesco"}, {"subject": "Doug"}),
    ("(firstname = 'Francesco' AND lastname = 'Guardiani') OR subject = 'Francesco Guardiani'",
     {"firstname": "Francesco", "lastname": "Guardiani"},
     {"firstname": "Francesco", "lastname": "Davis", "subject": "Doug"}),
    ("sequence = 10", {"sequence": 10}, {"sequence": 11}),
    ("sequence = 10", {"sequence": "10"}, {"sequence": "ten"}),
    ("hop < ttl", {"hop": 1, "ttl": 2}, {"hop": 2, "ttl": 2}),
    ("int(hop) < int(ttl) and int(hop) < 1000", {"hop": "5", "ttl": "10"},
     {"hop": "5", "ttl": "abc"}),
    ("type LIKE 'orders.%' AND source NOT IN ('/test', '/dev')",
     {"source": "/prod"}, {"source": "/dev"}),
]


@pytest.mark.parametrize("expression, yes, no", SPEC_EXAMPLES)
def test_filter_real_events(expression, yes, no):
    compiled = cesql.compile(expression)
    assert compiled.matches(fastflow.Event("orders.eu", b"", **yes)) is True
    assert compiled.matches(fastflow.Event("orders.eu", b"", **no)) is False


# -- the API ------------------------------------------------------------------------------

def test_expression_keeps_its_text_and_reads_well():
    text = "int(hop) <  10 AND subject LIKE 'a%'"
    compiled = cesql.compile(text)
    assert compiled.expression == text
    assert repr(compiled) == ("<cesql.Expression \"int(hop) <  10 AND subject LIKE 'a%'\" "
                              "parsed as ((INT(hop) < 10) AND (subject LIKE 'a%'))>")


@pytest.mark.parametrize("expression, type_", [
    ("1 + 1", "Integer"), ("'a'", "String"), ("a = 1", "Boolean"), ("LENGTH(a)", "Integer"),
    ("CONCAT()", "String"), ("FOO()", "Boolean"), ("a", None), ("(a)", None),
    ("a IN (1)", "Boolean"), ("EXISTS a", "Boolean"), ("-a", "Integer"),
])
def test_static_return_type(expression, type_):
    assert cesql.compile(expression).type == type_


def test_compiled_expression_is_reusable():
    compiled = cesql.compile("n * 2")
    assert [compiled.evaluate({"n": n}) for n in (1, 2, "3")] == [(2, []), (4, []), (6, [])]
    value, errors = compiled.evaluate({})
    assert (value, len(errors)) == (0, 1)
    assert compiled.evaluate({"n": 4}) == (8, [])


def test_trim_strips_exactly_unicode_white_space():
    # White_Space is str.isspace() less U+001C..U+001F (bidi class B/S, not White_Space)
    spaces = {chr(c) for c in range(0x110000) if chr(c).isspace()}
    assert set(cesql._WHITESPACE) == spaces - {"\x1c", "\x1d", "\x1e", "\x1f"}
    for c in spaces:
        value, errors = cesql.compile("TRIM(s)").evaluate({"s": c + "x" + c})
        assert value == ("x" if c in cesql._WHITESPACE else c + "x" + c)


INT32 = st.integers(-2 ** 31, 2 ** 31 - 1)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=INT32, y=INT32, op=st.sampled_from(["+", "-", "*", "/", "%"]))
def test_integer_arithmetic_against_exact_fractions(x, y, op):
    # spec 3.4.2: / truncates towards 0; % = x - y * (x / y) has the sign of x;
    # a result outside 32 bits is a MathError with 0, as is / or % by zero
    if op in "/%" and y == 0:
        expected = (0, ["math"])
    else:
        quotient = int(Fraction(x, y)) if op in "/%" else None
        exact = {"+": x + y, "-": x - y, "*": x * y, "/": quotient,
                 "%": x - y * quotient if quotient is not None else None}[op]
        expected = (exact, []) if -2 ** 31 <= exact < 2 ** 31 else (0, ["math"])
    assert run("{} {} {}".format(x, op, y)) == expected
    # the same through attributes, which are cast from strings
    assert run("x {} y".format(op), {"x": str(x), "y": str(y)}) == expected
