"""tools/mutation_check.py: its edits hit exactly what they name, and every anchor still matches the code.

The last two tests are what keeps the mutation check working as the code changes: a layer's function
renamed or a snippet rewritten fails here, in the ordinary suite, not only when someone runs the tool.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tools.mutation_check import REPO, AnchorError, Prepend, Replace, ReplaceBody, denied_syscalls, mutations

SOURCE = '''
def target(x):
    """Docstring."""
    y = x + 1
    return y


class Box:
    def method(self):
        return "a" + "a"
'''


def test_replace_body_keeps_the_docstring() -> None:
    out = ReplaceBody("m.py", "target", "return 0").apply(SOURCE)
    func = ast.parse(out).body[0]
    assert isinstance(func, ast.FunctionDef)
    assert ast.get_docstring(func) == "Docstring."
    assert [ast.unparse(node) for node in func.body[1:]] == ["return 0"]


def test_prepend_goes_after_the_docstring_and_keeps_the_body() -> None:
    out = Prepend("m.py", "target", "x = 2").apply(SOURCE)
    func = ast.parse(out).body[0]
    assert isinstance(func, ast.FunctionDef)
    assert [ast.unparse(node) for node in func.body[1:]] == ["x = 2", "y = x + 1", "return y"]


def test_replace_finds_a_method_and_changes_only_it() -> None:
    out = Replace("m.py", "Box.method", 'return "a"', 'return "b"').apply(SOURCE)
    assert 'return "b" + "a"' in out and "y = x + 1" in out


@pytest.mark.parametrize(
    "edit",
    [
        Replace("m.py", "Box.method", '"a"', '"b"'),  # twice in the function
        Replace("m.py", "target", "return 0", "pass"),  # absent
        ReplaceBody("m.py", "missing", "pass"),
        Prepend("m.py", "Nope.method", "pass"),
    ],
)
def test_an_anchor_that_does_not_match_exactly_once_is_an_error(edit: ReplaceBody | Replace) -> None:
    with pytest.raises(AnchorError):
        edit.apply(SOURCE)


def test_every_mutation_still_applies_to_this_checkout() -> None:
    every = mutations(seed=0)
    assert len({m.name for m in every}) == len(every)
    for mutation in every:
        for edit in mutation.edits:
            source = edit.apply((REPO / edit.path).read_text())
            compile(source, edit.path, "exec")
            assert source != (REPO / edit.path).read_text(), f"{mutation.name} changes nothing in {edit.path}"


def test_every_mutation_names_tests_that_exist() -> None:
    for mutation in mutations(seed=0):
        assert mutation.tests, mutation.name
        for test in mutation.tests:
            path, _, node = test.partition("::")
            assert (REPO / path).is_file(), f"{mutation.name}: {path} does not exist"
            if node:
                name = node.split("[")[0]
                assert f"def {name}(" in Path(REPO / path).read_text(), f"{mutation.name}: no test {node} in {path}"


def test_the_deny_list_entry_comes_from_the_filters_own_table() -> None:
    names = denied_syscalls((REPO / "hanzo_sandbox_mcp/linux/seccomp.py").read_text())
    assert "ptrace" in names and len(names) == len(set(names))
