"""The sidebar: the profile's conversations, newest first, plus the temporary-chat marker.

Titles are untrusted (they come from the first message, or from an imported log): each option's
prompt is a ``Content`` built from the plain title, so ``[@click=app.quit]`` stays text. Keys
while the list has focus: Enter opens, ``r`` renames, ``e`` exports, ``d``/Delete deletes (with a
confirmation from the screen); the screen's bindings and the command palette do the same for the
open conversation from anywhere. Each chat shows its id (``#12``), the one `lpm chats` and
`lpm forget` take.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from tui.formatting import ago, literal, one_line
from tui.messages import ConversationChosen

NEW_CHAT_ID = "new"


def conversation_prompt(conversation: Any, *, width: int = 22, is_open: bool = False) -> Content:
    """Two lines: the title (literal) and a dim '[not learned ·] #id · when · messages' line."""
    title = literal(one_line(conversation.title, width), "bold" if is_open else "")
    facts = [f"#{conversation.id}", ago(conversation.updated_at)]
    count = getattr(conversation, "message_count", 0)
    if count:
        facts.append(f"{count} msg")
    if getattr(conversation, "import_id", None) is not None:
        facts.append("imported")
    if getattr(conversation, "exclude_from_memory", False):
        facts.insert(0, "not learned")  # first: the narrow column must not cut it off
    return Content.assemble(title, "\n", Content(" · ".join(facts)).stylize("dim"))


class ConversationList(OptionList):
    """Options keyed by conversation id (as a string); the first option starts a new chat."""

    BINDINGS = [
        Binding("r", "act_on_highlighted('rename_chat')", "Rename", show=False),
        Binding("e", "act_on_highlighted('export_chat')", "Export", show=False),
        Binding("d,delete", "act_on_highlighted('delete_chat')", "Delete", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.open_id: int | None = None

    def set_conversations(self, conversations: Sequence[Any], open_id: int | None) -> None:
        """Rebuild the options, keeping the highlight on the open conversation."""
        self.open_id = open_id
        options = [Option(Content("+ New chat").stylize("italic"), id=NEW_CHAT_ID)]
        options += [
            Option(conversation_prompt(c, is_open=c.id == open_id), id=str(c.id))
            for c in conversations
        ]
        self.set_options(options)
        self.highlight_conversation(open_id)

    def highlight_conversation(self, conversation_id: int | None) -> None:
        key = NEW_CHAT_ID if conversation_id is None else str(conversation_id)
        try:
            self.highlighted = self.get_option_index(key)
        except Exception:  # OptionDoesNotExist: the conversation was deleted meanwhile
            self.highlighted = 0 if self.option_count else None

    def highlighted_id(self) -> int | None:
        if self.highlighted is None:
            return None
        option_id = self.get_option_at_index(self.highlighted).id
        return None if option_id in (None, NEW_CHAT_ID) else int(option_id)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        option_id = event.option.id
        chosen = None if option_id in (None, NEW_CHAT_ID) else int(option_id)
        self.post_message(ConversationChosen(chosen))

    async def action_act_on_highlighted(self, action: str) -> None:
        """Run the screen's ``action`` (rename / export / delete) on the highlighted chat."""
        conversation_id = self.highlighted_id()
        if conversation_id is not None:
            await self.screen.run_action(f"{action}({conversation_id})")


class Sidebar(Vertical):
    """Title, list and a one-line hint; hidden with Alt+C (and by default below 70 columns)."""

    def compose(self) -> ComposeResult:
        yield Static(Content("Chats").stylize("bold"), classes="sidebar-title")
        yield ConversationList(id="conversations")
        yield Static("r rename·e export·d del", markup=False, classes="sidebar-hint")

    @property
    def conversations(self) -> ConversationList:
        return self.query_one(ConversationList)
