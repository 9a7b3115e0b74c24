"""Guest-path globs matched in time linear in the path, whatever the glob.

The glob syntax is the rule pack's (`rules.path_glob_regex`): `**/` is any number of whole
directories (none included), `**` elsewhere any characters, `*` any characters but `/`, `?`
one character but `/`; a glob that does not start with `/` matches at any depth (as in
.gitignore). As a regex, `**/` is `(?:.*/)?`, and a backtracking engine (`re`) takes time
exponential in the number of `**` on a path that almost matches: a 3.9 KB guest path and
`**/vendor/**/tests/**/*.pem` took tens of seconds per finding.

Here a glob is compiled to a small nondeterministic automaton (one state per glob token, and
one more for the inside of each `**/`), run over the path with every live state at once
(Thompson's construction): each character of the path costs at most one step per state, so
matching is O(len(path) x len(glob)) and never backtracks. The sets of live states met are
memoised as a lazy DFA, so a path usually costs one dictionary look-up per character.

Differences from the regex it replaces, both on purpose: `**` matches every character,
newline included (a regex `.` does not, so a file name holding a newline escaped every `**`
glob: an ignore entry, or a policy `fail` rule), and the end of the glob is the end of the
path (a regex `$` also matched before a final newline).
"""

from __future__ import annotations

import functools

# Token kinds.
_LIT, _ONE, _STAR, _ANY, _DIRS, _END = range(6)
# The DFA memo of one glob is dropped when it grows past this many transitions: each is
# bounded by the glob, but a hostile path could otherwise make many distinct ones.
_MEMO_LIMIT = 4096


class Glob:
    """One compiled guest-path glob. `match(path)` is whether the whole path matches."""

    def __init__(self, glob: str, caseless: bool = False) -> None:
        self.glob = glob
        self.caseless = caseless
        tokens: list[tuple[int, str]] = []
        if not glob.startswith("/"):
            tokens.append((_DIRS, ""))  # a relative glob matches at any depth
        i = 0
        while i < len(glob):
            if glob.startswith("**/", i):
                tokens.append((_DIRS, ""))
                i += 3
            elif glob.startswith("**", i):
                tokens.append((_ANY, ""))
                i += 2
            elif glob[i] == "*":
                tokens.append((_STAR, ""))
                i += 1
            elif glob[i] == "?":
                tokens.append((_ONE, ""))
                i += 1
            else:
                tokens.append((_LIT, glob[i].lower() if caseless else glob[i]))
                i += 1
        tokens.append((_END, ""))
        self._tokens = tokens
        # Characters that steer the automaton; every other character acts alike.
        self._special = frozenset(c for kind, c in tokens if kind == _LIT) | {"/"}
        self._start = self._closure({0})
        self._memo: dict[tuple[frozenset[int], str | None], frozenset[int]] = {}

    # A state is 2 * t (about to match token t) or 2 * t + 1 (inside the `**/` of token t,
    # having consumed at least one character of it).

    def _closure(self, states: set[int]) -> frozenset[int]:
        """`states` and every state reachable from them without consuming a character."""
        todo = list(states)
        seen = set(states)
        while todo:
            state = todo.pop()
            if state % 2:
                continue
            kind = self._tokens[state // 2][0]
            if kind in (_STAR, _ANY, _DIRS):
                nxt = state + 2
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return frozenset(seen)

    def _step(self, states: frozenset[int], char: str | None) -> frozenset[int]:
        """The states after consuming `char` (lower-cased already when caseless); None
        stands for any character that is neither a literal of the glob nor `/`."""
        out: set[int] = set()
        for state in states:
            token = state // 2
            if state % 2:  # inside `**/`: any character, and a `/` may end it
                out.add(state)
                if char == "/":
                    out.add(state + 1)
                continue
            kind, literal = self._tokens[token]
            if kind == _LIT:
                if char == literal:
                    out.add(state + 2)
            elif kind == _ONE:
                if char != "/":
                    out.add(state + 2)
            elif kind == _STAR:
                if char != "/":
                    out.add(state)
            elif kind == _ANY:
                out.add(state)
            elif kind == _DIRS:
                out.add(state + 1)
                if char == "/":
                    out.add(state + 2)
        return self._closure(out)

    def match(self, path: str) -> bool:
        """Whether all of `path` matches the glob (case ignored if compiled `caseless`)."""
        accept = 2 * (len(self._tokens) - 1)
        states = self._start
        memo = self._memo
        special = self._special
        for char in path:
            if self.caseless:
                char = char.lower()
            key = char if char in special else None
            following = memo.get((states, key))
            if following is None:
                if len(memo) >= _MEMO_LIMIT:
                    memo.clear()
                following = self._step(states, key)
                memo[(states, key)] = following
            states = following
            if not states:
                return False
        return accept in states


@functools.lru_cache(maxsize=4096)
def compile_glob(glob: str, caseless: bool = False) -> Glob:
    """The compiled `glob` (kept: ignore files and policies match one glob many times)."""
    return Glob(glob, caseless)
