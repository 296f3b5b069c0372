"""The text a model reads: a prompt as is, or inside the model's chat template as the user's message (the paper wraps
its prompts in Llama's template), optionally with the assistant's answer already begun.

    text, shift = model_text(tokenizer, prompt, chat=uses_chat_template(tokenizer))
    text[shift:shift + len(prompt)] == prompt      # so character spans inside the prompt map into `text`
    model_text(tok, prompt, chat=True, assistant_prefix="The fruits in the list are:")   # the answer begun

The query token is the last token of `text`: the template's generation prompt, or the prefix's last token.
"""

from __future__ import annotations


def uses_chat_template(tokenizer) -> bool:
    """Instruction-tuned models read prompts inside their chat template; the organisms have none."""
    return bool(getattr(tokenizer, "chat_template", None))


def model_text(tokenizer, text: str, chat: bool, assistant_prefix: str = "") -> tuple[str, int]:
    """(the string the model reads, the character where `text` starts inside it). With `chat`, `text` is the user's
    message and the string ends with the assistant's generation prompt, then `assistant_prefix` (if any)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not chat:
        if assistant_prefix:
            raise ValueError("assistant_prefix needs chat=True (a plain prompt has no assistant turn to begin)")
        return text, 0
    if not uses_chat_template(tokenizer):
        raise ValueError("chat=True but the tokenizer has no chat template: pass chat=False for a plain prompt")
    templated = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    shift = templated.find(text)
    if shift < 0 or templated.find(text, shift + 1) >= 0:
        raise ValueError("the chat template did not embed the prompt text exactly once; cannot locate its tokens")
    return templated + assistant_prefix, shift
