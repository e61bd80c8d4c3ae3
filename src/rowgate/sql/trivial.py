"""Is a WHERE clause trivially true?

"DELETE FROM t WHERE 1=1" deletes every row just like "DELETE FROM t", so the guardrail
against unfiltered writes must see through conditions that hold for every row. This module
folds constants in PostgreSQL's three-valued logic and recognises tautologies over the same
expression (``x = x``, ``x IS NULL OR x IS NOT NULL``, ``p OR NOT p``, ``x LIKE '%'``).

It errs one way only: a condition it cannot prove true is treated as a real filter. Rows
where a tautology over a column is NULL (``x = x`` with x NULL) are ignored on purpose:
such a condition still filters nothing the author meant to keep.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from enum import Enum

from pglast import ast
from pglast.enums import A_Expr_Kind, BoolExprType, BoolTestType, NullTestType, SubLinkType


class Truth(Enum):
    TRUE = "true"
    FALSE = "false"
    NULL = "null"
    UNKNOWN = "unknown"  # depends on the row, or beyond what we fold


T, F, N, U = Truth.TRUE, Truth.FALSE, Truth.NULL, Truth.UNKNOWN


class _Null:
    pass


NULL = _Null()
Const = bool | int | Decimal | str | _Null
Same = Callable[[object, object], bool]
_NO = object()  # "not a constant we can fold"

_BOOL_TYPES = {"bool", "boolean"}
_INT_TYPES = {"int2", "int4", "int8", "integer", "smallint", "bigint", "int"}
_NUM_TYPES = {"numeric", "decimal", "float4", "float8", "real", "double precision"}
_TEXT_TYPES = {"text", "varchar", "bpchar", "char", "name", "character varying", "unknown"}


def is_trivially_true(expr: ast.Node | None, same: Same) -> bool:
    """True when ``expr`` as a WHERE clause keeps every row. ``same`` says whether two
    expressions denote the same value (the caller resolves column references)."""
    if expr is None:
        return True
    return truth(expr, same) is T


def parse_bool(text: str) -> bool | None:
    # boolin: trims whitespace, accepts any unambiguous prefix of true/false/yes/no, on/off, 1/0
    s = text.strip().lower()
    if not s:
        return None
    for word, value in (("true", True), ("false", False), ("yes", True), ("no", False)):
        if word.startswith(s):
            return value
    if s in ("on",):
        return True
    if len(s) >= 2 and "off".startswith(s):
        return False
    if s == "1":
        return True
    if s == "0":
        return False
    return None


def _type_name(tn: ast.TypeName | None) -> str:
    if tn is None:
        return ""
    names = [n.sval for n in tn.names or ()]
    if tn.arrayBounds:
        return "array"
    return names[-1] if names else ""


def const(node: object) -> object:
    """The value of a constant expression, or ``_NO``."""
    if isinstance(node, ast.A_Const):
        if node.isnull:
            return NULL
        v = node.val
        if isinstance(v, ast.Boolean):
            return bool(v.boolval)
        if isinstance(v, ast.Integer):
            return int(v.ival or 0)
        if isinstance(v, ast.Float):
            try:
                return Decimal(v.fval or "")
            except InvalidOperation:
                return _NO
        if isinstance(v, ast.String):
            return str(v.sval)
        return _NO
    if isinstance(node, ast.TypeCast):
        return _cast(const(node.arg), _type_name(node.typeName))
    if isinstance(node, ast.CoalesceExpr):
        for arg in node.args or ():
            value = const(arg)
            if value is _NO:
                return _NO
            if value is not NULL:
                return value
        return NULL
    if isinstance(node, ast.A_Expr) and node.kind == A_Expr_Kind.AEXPR_OP and len(node.name or ()) == 1:
        op = _op_name(node)
        return _arith(op, const(node.lexpr) if node.lexpr is not None else None, const(node.rexpr))
    return _NO


def _op_name(node: ast.A_Expr) -> str:
    last = (node.name or (None,))[-1]
    return (last.sval or "") if isinstance(last, ast.String) else ""


def _cast(value: object, type_name: str) -> object:
    if value is _NO or value is NULL:
        return value
    if type_name in _BOOL_TYPES:
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value != 0
        if isinstance(value, str):
            parsed = parse_bool(value)
            return _NO if parsed is None else parsed
        return _NO
    if type_name in _INT_TYPES | _NUM_TYPES:
        if isinstance(value, bool):
            return _NO
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            return _NO
        if type_name in _INT_TYPES:
            return int(number.to_integral_value()) if number == number.to_integral_value() else _NO
        return number
    if type_name in _TEXT_TYPES:
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)
    return _NO


def _arith(op: str, left: object, right: object) -> object:
    if left is None:  # prefix operator
        if op == "-" and isinstance(right, int | Decimal) and not isinstance(right, bool):
            return -right
        if op == "+" and isinstance(right, int | Decimal) and not isinstance(right, bool):
            return right
        return _NO
    if left is _NO or right is _NO:
        return _NO
    if left is NULL or right is NULL:
        return NULL
    if op == "||" and isinstance(left, str) and isinstance(right, str):
        return left + right
    if not (isinstance(left, int | Decimal) and isinstance(right, int | Decimal)):
        return _NO
    if isinstance(left, bool) or isinstance(right, bool):
        return _NO
    try:
        if op == "+":
            return left + right
        if op == "-":
            return left - right
        if op == "*":
            return left * right
        if op == "/" and right != 0:
            if isinstance(left, int) and isinstance(right, int):
                return int(Decimal(left) / Decimal(right))  # integer division truncates toward zero
            return Decimal(left) / Decimal(right)
    except (InvalidOperation, OverflowError):
        return _NO
    return _NO


def _as_truth(value: object) -> Truth:
    if value is NULL:
        return N
    if isinstance(value, bool):
        return T if value else F
    if isinstance(value, str):  # an untyped literal in a boolean position is read as boolean
        parsed = parse_bool(value)
        return U if parsed is None else (T if parsed else F)
    return U


def _compare(op: str, left: object, right: object) -> Truth:
    if left is _NO or right is _NO:
        return U
    if left is NULL or right is NULL:
        return N
    if isinstance(left, str) and isinstance(right, int | Decimal) and not isinstance(right, bool):
        left = _cast(left, "numeric")
    elif isinstance(right, str) and isinstance(left, int | Decimal) and not isinstance(left, bool):
        right = _cast(right, "numeric")
    elif isinstance(left, bool) and isinstance(right, str):
        right = _cast(right, "bool")
    elif isinstance(right, bool) and isinstance(left, str):
        left = _cast(left, "bool")
    if left is _NO or right is _NO:
        return U
    numeric = all(isinstance(v, int | Decimal) and not isinstance(v, bool) for v in (left, right))
    if not numeric and type(left) is not type(right):
        return U
    if op == "=":
        return T if left == right else F
    if op in ("<>", "!="):
        return F if left == right else T
    if not numeric:  # string ordering depends on the collation: do not guess
        return U
    assert isinstance(left, int | Decimal) and isinstance(right, int | Decimal)
    result = {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}.get(op)
    return U if result is None else (T if result else F)


_SAME_TRUE = {"=", "<=", ">="}
_SAME_FALSE = {"<>", "!=", "<", ">"}


def _all_pattern(op: str, pattern: object) -> bool:
    """A LIKE/regex pattern that matches every non-null string."""
    if not isinstance(pattern, str):
        return False
    if op in ("~~", "~~*"):
        return pattern != "" and set(pattern) == {"%"}
    if op in ("~", "~*"):
        return pattern in ("", ".*", "^", "^.*", ".*$", "^.*$")
    return False


def truth(node: object, same: Same) -> Truth:
    value = const(node)
    if value is not _NO:
        return _as_truth(value)
    if isinstance(node, ast.BoolExpr):
        return _bool_expr(node, same)
    if isinstance(node, ast.A_Expr):
        return _a_expr(node, same)
    if isinstance(node, ast.NullTest):
        arg = const(node.arg)
        if arg is _NO:
            return U
        is_null = arg is NULL
        return T if is_null == (node.nulltesttype == NullTestType.IS_NULL) else F
    if isinstance(node, ast.BooleanTest) and node.booltesttype is not None:
        return _boolean_test(node.booltesttype, truth(node.arg, same))
    if isinstance(node, ast.SubLink) and node.subLinkType == SubLinkType.EXISTS_SUBLINK:
        sub = node.subselect
        if (isinstance(sub, ast.SelectStmt) and not sub.fromClause and not sub.havingClause
                and sub.limitCount is None and sub.op == 0 and not sub.valuesLists
                and (sub.whereClause is None or truth(sub.whereClause, same) is T)):
            return T
    return U


def _value(node: object, same: Same) -> object:
    """A constant, or the folded value of a boolean expression: "(1 = 1) = true"."""
    value = const(node)
    if value is _NO and isinstance(node, ast.A_Expr | ast.BoolExpr | ast.NullTest | ast.BooleanTest):
        folded = truth(node, same)
        value = {T: True, F: False, N: NULL}.get(folded, _NO)
    return value


def _boolean_test(kind: BoolTestType, value: Truth) -> Truth:
    if value is U:
        return U
    holds = {
        BoolTestType.IS_TRUE: value is T,
        BoolTestType.IS_NOT_TRUE: value is not T,
        BoolTestType.IS_FALSE: value is F,
        BoolTestType.IS_NOT_FALSE: value is not F,
        BoolTestType.IS_UNKNOWN: value is N,
        BoolTestType.IS_NOT_UNKNOWN: value is not N,
    }[kind]
    return T if holds else F


def _bool_expr(node: ast.BoolExpr, same: Same) -> Truth:
    args: Sequence[ast.Node] = node.args or ()
    values = [truth(a, same) for a in args]
    if node.boolop == BoolExprType.NOT_EXPR:
        v = values[0]
        return {T: F, F: T}.get(v, v)
    if node.boolop == BoolExprType.AND_EXPR:
        if F in values:
            return F
        if U in values:
            return U
        return N if N in values else T
    if T in values or _has_complements(args, same):
        return T
    if U in values:
        return U
    return N if N in values else F


_NULL_PAIRS = {NullTestType.IS_NULL: NullTestType.IS_NOT_NULL, NullTestType.IS_NOT_NULL: NullTestType.IS_NULL}
_BOOL_PAIRS = {
    BoolTestType.IS_TRUE: BoolTestType.IS_NOT_TRUE, BoolTestType.IS_NOT_TRUE: BoolTestType.IS_TRUE,
    BoolTestType.IS_FALSE: BoolTestType.IS_NOT_FALSE, BoolTestType.IS_NOT_FALSE: BoolTestType.IS_FALSE,
    BoolTestType.IS_UNKNOWN: BoolTestType.IS_NOT_UNKNOWN, BoolTestType.IS_NOT_UNKNOWN: BoolTestType.IS_UNKNOWN,
}


def _has_complements(args: Sequence[ast.Node], same: Same) -> bool:
    """An OR holding a test and its negation over the same expression."""
    for i, a in enumerate(args):
        for b in args[i + 1:]:
            for x, y in ((a, b), (b, a)):
                if isinstance(x, ast.NullTest) and isinstance(y, ast.NullTest):
                    if x.nulltesttype is not None and _NULL_PAIRS[x.nulltesttype] == y.nulltesttype \
                            and same(x.arg, y.arg):
                        return True
                elif isinstance(x, ast.BooleanTest) and isinstance(y, ast.BooleanTest):
                    if x.booltesttype is not None and _BOOL_PAIRS[x.booltesttype] == y.booltesttype \
                            and same(x.arg, y.arg):
                        return True
                elif (isinstance(y, ast.BoolExpr) and y.boolop == BoolExprType.NOT_EXPR
                      and same(x, (y.args or (None,))[0])):
                    return True
    return False


def _a_expr(node: ast.A_Expr, same: Same) -> Truth:
    op = _op_name(node)
    kind = node.kind
    left, right = node.lexpr, node.rexpr
    if kind == A_Expr_Kind.AEXPR_OP:
        if left is None or right is None:
            return U
        if same(left, right):
            if op in _SAME_TRUE:
                return T
            if op in _SAME_FALSE:
                return F
        if op in ("~", "~*") and _all_pattern(op, const(right)):
            return T
        return _compare(op, _value(left, same), _value(right, same))
    if kind in (A_Expr_Kind.AEXPR_LIKE, A_Expr_Kind.AEXPR_ILIKE):
        # "x LIKE '%'" keeps every non-null row; NOT LIKE is never proven true
        if op in ("~~", "~~*") and _all_pattern(op, const(right)):
            return T
        return U
    if kind in (A_Expr_Kind.AEXPR_DISTINCT, A_Expr_Kind.AEXPR_NOT_DISTINCT):
        negate = kind == A_Expr_Kind.AEXPR_DISTINCT
        if same(left, right):
            equal = True
        else:
            lv, rv = const(left), const(right)
            if lv is _NO or rv is _NO:
                return U
            if lv is NULL or rv is NULL:
                equal = lv is NULL and rv is NULL
            else:
                cmp = _compare("=", lv, rv)
                if cmp is U:
                    return U
                equal = cmp is T
        return T if equal != negate else F
    if kind == A_Expr_Kind.AEXPR_IN and isinstance(right, tuple):
        results = [T if same(left, item) else _compare("=", const(left), const(item)) for item in right]
        if op == "=":
            if T in results:
                return T
            return U
        if op == "<>" and results and all(r is F for r in results):
            return T
        return U
    if kind in (A_Expr_Kind.AEXPR_BETWEEN, A_Expr_Kind.AEXPR_BETWEEN_SYM,
                A_Expr_Kind.AEXPR_NOT_BETWEEN, A_Expr_Kind.AEXPR_NOT_BETWEEN_SYM):
        if not isinstance(right, tuple) or len(right) != 2:
            return U
        lo, hi = right
        negate = kind in (A_Expr_Kind.AEXPR_NOT_BETWEEN, A_Expr_Kind.AEXPR_NOT_BETWEEN_SYM)
        if same(left, lo) and same(left, hi):
            inside = T
        else:
            v, a, b = const(left), const(lo), const(hi)
            orders = [(a, b)]
            if kind in (A_Expr_Kind.AEXPR_BETWEEN_SYM, A_Expr_Kind.AEXPR_NOT_BETWEEN_SYM):
                orders.append((b, a))
            checks = [(_compare(">=", v, x), _compare("<=", v, y)) for x, y in orders]
            if any(c == (T, T) for c in checks):
                inside = T
            elif all(F in c for c in checks):
                inside = F
            else:
                return U
        return {T: F, F: T}[inside] if negate else inside
    return U
