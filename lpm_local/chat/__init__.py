"""The chat: one encoding of turns into ids, the engine that streams replies, one turn end to
end."""
