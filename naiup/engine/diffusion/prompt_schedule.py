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


def _render(nodes: list[_Node], step: int, steps: int) -> str:
    out = []
    for n in nodes:
        if isinstance(n, str):
            out.append(n)
        elif isinstance(n, _Edit):
            switch = int(n.when * steps) if n.when < 1 else int(n.when)
            out.append(_render(n.before if step <= switch else n.after, step, steps))
        elif isinstance(n, _Alternate):
            out.append(_render(n.options[(step - 1) % len(n.options)], step, steps))
        else:
            out.append("[" + _render(n.inner, step, steps) + "]")
    return "".join(out)


def _parse(text: str) -> list[_Node]:
    nodes, pos = _sequence(text, 0, top=True)
    assert pos == len(text)
    return nodes


def _sequence(text: str, pos: int, top: bool) -> tuple[list[_Node], int]:
    """Nodes up to an unescaped ']' ':' or '|' that belongs to an enclosing bracket (not at top)."""
    nodes: list[_Node] = []
    buf: list[str] = []
    parens = 0  # ':' inside (word:1.2) is a weight, not an edit
    while pos < len(text):
        ch = text[pos]
        if ch == "\\" and pos + 1 < len(text):
            buf.append(text[pos : pos + 2])  # escapes pass through to the attention parser
            pos += 2
        elif ch == "[":
            node, end = _bracket(text, pos)
            if node is None:  # never closed: an opener the attention parser deals with
                buf.append(ch)
                pos += 1
                continue
            if buf:
                nodes.append("".join(buf))
                buf = []
            nodes.append(node)
            pos = end
        elif not top and parens == 0 and ch in "]:|":
            break
        else:
            parens += (ch == "(") - (ch == ")" and parens > 0)
            buf.append(ch)
            pos += 1
    if buf:
        nodes.append("".join(buf))
    return nodes, pos


def _bracket(text: str, start: int) -> tuple[_Node | None, int]:
    """The bracket opening at `start`, and the position after its ']'; None when it never closes."""
    parts: list[list[_Node]] = []
    seps: list[str] = []
    pos = start + 1
    while True:
        part, pos = _sequence(text, pos, top=False)
        parts.append(part)
        if pos >= len(text):
            return None, start + 1
        if text[pos] == "]":
            break
        seps.append(text[pos])
        pos += 1
    end = pos + 1
    if seps and all(s == "|" for s in seps):
        return _Alternate(parts), end
    if seps and all(s == ":" for s in seps) and len(parts) in (2, 3):
        when = _number(parts[-1])
        if when is not None and when >= 0:
            before = parts[0] if len(parts) == 3 else []
            after = parts[1] if len(parts) == 3 else parts[0]
            return _Edit(before, after, when), end
    # Not a schedule: the brackets and separators are text (e.g. "[word]" or "(a:1.2)" inside).
    inner: list[_Node] = []
    for i, part in enumerate(parts):
        if i:
            inner.append(seps[i - 1])
        inner.extend(part)
    return _Bracket(inner), end


def _number(nodes: list[_Node]) -> float | None:
    if len(nodes) != 1 or not isinstance(nodes[0], str):
        return None
    try:
        return float(nodes[0].strip())
    except ValueError:
        return None
