"""A1111 prompt editing and alternation: which prompt text each UNet step sees.

prompts_per_step(prompt, steps) -> list[str]   # one plain A1111 prompt per step, brackets resolved

Syntax (A1111's documented behaviour, our own parser):
    [from:to:when]   `from` up to step `when`, then `to`; `when` < 1 is a fraction of the steps
    [to:when]        nothing, then `to`          [from::when]   `from`, then nothing
    [a|b|c]          a on step 1, b on step 2, c on step 3, a again on step 4 ...
Brackets nest. Any other [..] is A1111's de-emphasis and stays in the text for the attention parser,
as does everything escaped with a backslash. Steps are the UNet steps this refine runs
(steps x denoise), so with LCM's usual 2 steps [from:to:0.5] is `from` then `to`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["prompts_per_step"]


@dataclass(frozen=True, slots=True)
class _Edit:
    before: list[_Node]
    after: list[_Node]
    when: float


@dataclass(frozen=True, slots=True)
class _Alternate:
    options: list[list[_Node]]


@dataclass(frozen=True, slots=True)
class _Bracket:  # plain [..]: de-emphasis, kept as text
    inner: list[_Node]


_Node = str | _Edit | _Alternate | _Bracket


def prompts_per_step(prompt: str, steps: int) -> list[str]:
    """The prompt each of `steps` UNet steps (>= 1) uses; all equal when it has no schedule."""
    nodes = _parse(prompt)
    return [_render(nodes, step, steps) for step in range(1, max(1, steps) + 1)]


# Parsing and rendering use explicit stacks, not recursion: the text may come from any image's
# metadata, and a prompt of a few thousand nested brackets must not raise RecursionError.


def _render(nodes: list[_Node], step: int, steps: int) -> str:
    out: list[str] = []
    todo = [iter(nodes)]
    while todo:
        for n in todo[-1]:
            if isinstance(n, str):
                out.append(n)
                continue
            if isinstance(n, _Edit):
                switch = int(n.when * steps) if n.when < 1 else int(n.when)
                todo.append(iter(n.before if step <= switch else n.after))
            elif isinstance(n, _Alternate):
                todo.append(iter(n.options[(step - 1) % len(n.options)]))
            else:
                out.append("[")
                todo += [iter(["]"]), iter(n.inner)]
            break
        else:
            todo.pop()
    return "".join(out)


class _Run:
    """A node list being built; adjacent text is joined into one string."""

    __slots__ = ("nodes", "text")

    def __init__(self) -> None:
        self.nodes: list[_Node] = []
        self.text: list[str] = []

    def add(self, node: _Node) -> None:
        if isinstance(node, str):
            self.text.append(node)
            return
        self.done()
        self.nodes.append(node)

    def done(self) -> list[_Node]:
        if self.text:
            self.nodes.append("".join(self.text))
            self.text = []
        return self.nodes


@dataclass(slots=True)
class _Open:
    """A `[` not yet closed: its parts so far (split at `:` or `|`), and `(` depth in the last one."""

    parts: list[_Run]
    seps: list[str]
    parens: int = 0  # ':' inside (word:1.2) is a weight, not an edit


def _parse(text: str) -> list[_Node]:
    """Brackets close at the first unescaped `]` outside parentheses at their own level. One that
    never closes is text, and so is every `:`/`|` it held: the enclosing brackets cannot close
    either (their `]` would have closed it first), so all of them end up as text at the top."""
    top = _Run()
    stack: list[_Open] = []
    pos = 0
    while pos < len(text):
        ch = text[pos]
        run = stack[-1].parts[-1] if stack else top
        if ch == "\\" and pos + 1 < len(text):
            run.add(text[pos : pos + 2])  # escapes pass through to the attention parser
            pos += 2
            continue
        pos += 1
        if ch == "[":
            stack.append(_Open([_Run()], []))
        elif stack and stack[-1].parens == 0 and ch == "]":
            node = _close(stack.pop())
            (stack[-1].parts[-1] if stack else top).add(node)
        elif stack and stack[-1].parens == 0 and ch in ":|":
            stack[-1].seps.append(ch)
            stack[-1].parts.append(_Run())
        else:
            if stack:
                stack[-1].parens += (ch == "(") - (ch == ")" and stack[-1].parens > 0)
            run.add(ch)
    while stack:  # never closed: an opener the attention parser deals with
        unclosed = stack.pop()
        run = stack[-1].parts[-1] if stack else top
        run.add("[")
        for node in _joined(unclosed.parts, unclosed.seps):
            run.add(node)
    return top.done()


def _joined(parts: list[_Run], seps: list[str]) -> list[_Node]:
    """The parts with their separators back in between, as text."""
    out: list[_Node] = []
    for i, part in enumerate(parts):
        if i:
            out.append(seps[i - 1])
        out.extend(part.done())
    return out


def _close(bracket: _Open) -> _Node:
    parts, seps = [p.done() for p in bracket.parts], bracket.seps
    if seps and all(s == "|" for s in seps):
        return _Alternate(parts)
    if seps and all(s == ":" for s in seps) and len(parts) in (2, 3):
        when = _number(parts[-1])
        if when is not None and when >= 0:
            before = parts[0] if len(parts) == 3 else []
            after = parts[1] if len(parts) == 3 else parts[0]
            return _Edit(before, after, when)
    # Not a schedule: the brackets and separators are text (e.g. "[word]" or "(a:1.2)" inside).
    return _Bracket(_joined(bracket.parts, seps))


def _number(nodes: list[_Node]) -> float | None:
    """The step `when` of an edit: a finite number (`inf` or `1e999` would switch at no step)."""
    if len(nodes) != 1 or not isinstance(nodes[0], str):
        return None
    try:
        value = float(nodes[0].strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None
