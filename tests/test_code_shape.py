"""The shape of dnn's code: functions short enough to read at once, with few enough
parameters to call without a manual, and a top level a newcomer can take in."""
import ast
import pathlib

import dnn

PACKAGE = pathlib.Path(dnn.__file__).resolve().parent
MAX_LINES = 60  # of a function's body, its docstring aside
MAX_PARAMETERS = 7  # self and cls aside
# Public signatures that mirror Keras' own, option for option (a user reads them as
# keyword arguments, and Keras has them so), and scikit-learn estimators, whose
# convention is every setting a constructor parameter (MLPClassifier has 23).
PUBLIC_SIGNATURES = {"model.py:Sequential.fit", "layers/core.py:Dense.__init__",
                     "callbacks.py:EarlyStopping.__init__",
                     "callbacks.py:ReduceLROnPlateau.__init__", "plot.py:decision_boundary",
                     "optimizers/base.py:Optimizer.__init__",
                     "sklearn/classifier.py:DNNClassifier.__init__",
                     "sklearn/regressor.py:DNNRegressor.__init__"}


# Installed with pip install . (not -e), the repository's backends/, kernels/ and bench/
# sit inside the package as dnn.backends, dnn.kernels and dnn.bench; the rule is for the
# dnn/ folder, whichever way it was installed.
OTHER_FOLDERS = ("backends", "kernels", "bench")


def _functions():
    """``(place, node)`` of every function in the installed dnn package's own dnn/
    folder."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] in OTHER_FOLDERS:
            continue
        tree = ast.parse(path.read_text())
        parents = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                owner = parents.get(node)
                name = f"{owner.name}.{node.name}" if isinstance(owner, ast.ClassDef) \
                    else node.name
                yield f"{path.relative_to(PACKAGE)}:{name}", node


def _body_lines(node):
    body = node.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and \
            isinstance(first.value.value, str):
        if len(body) == 1:
            return 0
        first = body[1]
    return node.end_lineno - first.lineno + 1


def _parameters(node):
    args = node.args
    return [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs
            if a.arg not in ("self", "cls")]


def test_no_function_is_longer_than_a_screen():
    long = [f"{place} ({_body_lines(node)} lines)" for place, node in _functions()
            if _body_lines(node) > MAX_LINES]
    assert not long, f"functions over {MAX_LINES} lines: {long}"


def test_no_function_takes_more_than_a_handful_of_parameters():
    many = [f"{place} ({len(_parameters(node))})" for place, node in _functions()
            if len(_parameters(node)) > MAX_PARAMETERS and place not in PUBLIC_SIGNATURES]
    assert not many, f"functions of more than {MAX_PARAMETERS} parameters: {many}"


def test_the_public_signatures_exempted_still_exist():
    places = {place for place, _ in _functions()}
    assert PUBLIC_SIGNATURES <= places, PUBLIC_SIGNATURES - places


def test_the_top_level_is_a_dozen_modules_and_every_subpackage_says_what_it_holds():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= 12, modules
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.parent.name}/__init__.py has no docstring"
        first_paragraph = doc.split("\n\n")[0]
        assert len(first_paragraph.splitlines()) <= 2, \
            f"{init.parent.name}/__init__.py: say in two lines what lives there"
