"""The studio's modal screens: waiting for the provider, a refused token, a terminal too small,
help, and the confirmation in front of the only writes (stand-down and resume).

Each says what is wrong and what to do in plain words; none does IO (the app's connect worker
updates the waiting screen and reacts to the token typed on the token screen).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from barfinex_cli.studio.header import SCREEN_KEYS

_BOX_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{
    width: 76; height: auto; max-width: 100%;
    border: thick $accent; background: $surface; padding: 1 2;
}}
{name} .title {{ text-style: bold; margin-bottom: 1; }}
"""


class WaitingScreen(ModalScreen[None]):
    """The provider does not answer: say where the studio looks and when it tries again."""

    DEFAULT_CSS = _BOX_CSS.format(name="WaitingScreen")

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.why = ""

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"Waiting for the provider at {self.url}", classes="title")
            yield Static(self.why, id="why")
            yield Static(
                "Start one with `bfx provider start` (or `bfx up`), or point the studio at "
                "a running one with --url. The studio keeps trying; q quits."
            )

    def show_attempt(self, reason: str, retry_in_s: float, attempts: int) -> None:
        """Say why the last try failed and when the next comes."""
        self.why = f"{reason}\nretrying in {retry_in_s:.1f}s (tried {attempts} times)"
        for line in self.query("#why").results(Static):  # none until composed
            line.update(self.why)


class TokenScreen(ModalScreen[None]):
    """The provider refused the token: say how to pass one, and take one typed here."""

    DEFAULT_CSS = _BOX_CSS.format(name="TokenScreen")
    AUTO_FOCUS = "#token"

    class TokenEntered(Message):
        """A token typed on the token screen."""

        def __init__(self, token: str) -> None:
            super().__init__()
            self.token = token

    def __init__(self, url: str, reason: str) -> None:
        super().__init__()
        self.url = url
        self.reason = reason

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("The provider refused the gateway token", classes="title")
            yield Static(self.reason)
            yield Static(
                "Pass the provider's token with `bfx studio --token TOKEN` or BFX_TOKEN=TOKEN; "
                "on the provider's machine the studio reads DATA_DIR/token by itself "
                "(`bfx --data-dir DIR studio`). Or type it here:"
            )
            box = Input(placeholder="gateway token", password=True, id="token")
            box.cursor_blink = False  # a steady cursor: the screen looks the same every time
            yield box

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.post_message(self.TokenEntered(event.value.strip()))


class TooSmallScreen(ModalScreen[None]):
    """The terminal is smaller than the studio can draw in."""

    DEFAULT_CSS = """
    TooSmallScreen { align: center middle; }
    TooSmallScreen > Static { width: 100%; height: auto; text-align: center; color: $warning; }
    """

    def __init__(self, size: tuple[int, int], needed: tuple[int, int]) -> None:
        super().__init__()
        self.needed = needed
        self._asked = size

    def compose(self) -> ComposeResult:
        yield Static(self.text(self._asked), id="too-small")

    def text(self, size: tuple[int, int]) -> str:
        """Say how big the terminal is and how big it must be."""
        (w, h), (nw, nh) = size, self.needed
        return f"Terminal too small: {w}x{h}. The studio needs {nw}x{nh} — enlarge it (q quits)."

    def resized(self, size: tuple[int, int]) -> None:
        """Show the new size."""
        self._asked = size
        for line in self.query("#too-small").results(Static):  # none until composed
            line.update(self.text(size))


HELP = """\
Keys
  {screens}
  /          filter the rows of the screen (Esc clears)
  ?          this help
  ctrl+p     command palette (screens, themes, stand-down, resume)
  s / r      Risk screen: stand the inspector down / resume (asks first)
  Enter      Signals: show the signal on the Market chart · Decisions: explain
  q          quit

The studio observes: it reads the provider's REST routes and its /ws stream, and the advisor
and inspector through the provider's /proxy. Its only writes are the inspector's stand-down and
resume. The header shows the link, the mode (live / paper / replay), the market clock and the
wall clock; a dropped link reconnects by itself.
"""


class HelpScreen(ModalScreen[None]):
    """The keys and what the studio does."""

    DEFAULT_CSS = _BOX_CSS.format(name="HelpScreen")
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        screens = "  ".join(f"{k} {t}" for k, _, t in SCREEN_KEYS)
        with Vertical():
            yield Static("bfx studio — help", classes="title")
            yield Static(HELP.format(screens=screens))

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)


class ConfirmScreen(ModalScreen[bool]):
    """Ask before a write; dismissed with True only by the confirming button or `y`."""

    DEFAULT_CSS = _BOX_CSS.format(name="ConfirmScreen")
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str, confirm: str) -> None:
        super().__init__()
        self.question = question
        self.confirm = confirm

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, classes="title")
            yield Button(f"{self.confirm} (y)", id="yes", variant="error")
            yield Button("Cancel (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
