"""A causal chat LM through `from_pretrained`: chat template, left padding, greedy decoding, one answer per
message, in order. The Hugging Face text engine (tags from captions) is a thin shell around it.

Open-Sora's tag script padded batches on the right for Llama 3, whose tokenizer ships without a pad token and
with right padding: the short prompts of a batch then ended in pad tokens and the model continued after them,
so their answers changed with their batch mates. Here the tokenizer always pads on the left (pad = the first
end-of-turn token when it has none), decoding is greedy with sampling switched off whatever the checkpoint's
generation config says, and the tests prove that a batched answer equals the one-at-a-time answer.

Loading is apart from decoding (`load_chat_model` / `ChatGenerator(model, tokenizer)`), so a tensor-parallel
wrapper can load the model its own way and reuse the rest.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from vidcap.engines.hf_load import resolve_attn, resolve_device, resolve_dtype
from vidcap.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"


@dataclass
class Answer:
    """One generated answer: its text (special tokens dropped), token counts, and why it ended: "stop" (an
    end-of-turn token) or "length" (cut at max_new_tokens), the OpenAI API's names. `error` when not run."""

    text: str = ""
    prompt_tokens: int = 0
    generated_tokens: int = 0
    finish_reason: str | None = None
    error: str = ""
    token_ids: list[int] = field(default_factory=list)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_chat_tokenizer(model: str) -> Any:
    """The checkpoint's tokenizer, padding on the left, with a pad token; refuse one without a chat template."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load the tokenizer of {model!r}: {_first_line(exc)}") from exc
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"{model!r} has no chat template: use a chat (instruct) model, e.g. {DEFAULT_MODEL}")
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_chat_model(model: str, device: str | None = None, dtype: str | None = None,
                    attn: str | None = None) -> torch.nn.Module:
    """`model` (hub id or local folder) as a causal LM on its device, in eval mode."""
    from transformers import AutoModelForCausalLM

    where = resolve_device(device)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, where)}
    chosen = resolve_attn(attn, where)
    if chosen:
        kwargs["attn_implementation"] = chosen
    direct = importlib.util.find_spec("accelerate") is not None  # weights straight onto the device
    if direct:
        kwargs["device_map"] = str(where)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(model, **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load model {model!r} as a causal language model: {_first_line(exc)}") from exc
    return (loaded if direct else loaded.to(where)).eval()


class ChatGenerator:
    """Greedy chat answers for batches of user messages."""

    def __init__(self, model: Any, tokenizer: Any, max_new_tokens: int = 128,
                 device: torch.device | str | None = None, name: str = "") -> None:
        if max_new_tokens < 1:
            raise UserError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "name_or_path", "")
        self.max_new_tokens = max_new_tokens
        self.device = torch.device(device) if device is not None else model.device
        self.generation = greedy_config(model, tokenizer, max_new_tokens)
        eos = self.generation.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        self.context = context_length(model, tokenizer)
        self.is_noise = bool(getattr(model.config, "vidcap_tiny_random", False))
        if self.is_noise:
            log.warning("%s is a tiny RANDOM-WEIGHT model: its answers are noise", self.name)

    def prompt_text(self, message: str) -> str:
        """The chat-formatted prompt for one user message, ready for the assistant's answer."""
        return self.tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                                  add_generation_prompt=True)

    def prompt_tokens(self, message: str) -> int:
        return len(self.tokenizer(self.prompt_text(message), add_special_tokens=False)["input_ids"])

    def check_fits(self, message: str) -> None:
        """Refuse at start a message (an instruction with an empty caption) that leaves no room to answer."""
        total = self.prompt_tokens(message)
        if self._overflows(total):
            raise UserError(f"the prompt is too long for {self.name}: {total} prompt tokens + {self.max_new_tokens} "
                            f"new tokens > context {self.context}; shorten it or lower --max-new-tokens")

    def generate(self, messages: Sequence[str]) -> list[Answer]:
        """One answer per message, in order; a message that does not fit the context is an error answer."""
        if not messages:
            return []
        texts = [self.prompt_text(m) for m in messages]
        # the template already holds the BOS token: add_special_tokens would put a second one in front
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        overflow = {i for i, n in enumerate(lengths) if self._overflows(n)}
        if overflow:
            fits = iter(self.generate([m for i, m in enumerate(messages) if i not in overflow]))
            return [Answer(prompt_tokens=n, error=self._overflow_message(n)) if i in overflow else next(fits)
                    for i, n in enumerate(lengths)]
        inputs = inputs.to(self.device)
        with torch.inference_mode():
            output = self.model.generate(**inputs, generation_config=self.generation)
        new = output[:, inputs["input_ids"].shape[1]:].tolist()
        return [self._decode(tokens, n) for tokens, n in zip(new, lengths)]

    def figures(self) -> dict[str, Any]:
        figures: dict[str, Any] = {"model": self.name, "device": str(self.device),
                                   "dtype": str(self.model.dtype).removeprefix("torch."), "context": self.context}
        if self.is_noise:
            figures["random_weights"] = True
        q_proj = _first_q_proj(self.model)
        if q_proj is not None:  # rows of this process's attention query projection: halved under TP=2
            weight = q_proj.weight
            local = weight.to_local() if hasattr(weight, "to_local") else weight  # transformers TP: a DTensor
            figures["q_proj_rows"] = int(local.shape[0])
        if self.device.type == "cuda":
            figures["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated(self.device)
        return figures

    def _decode(self, tokens: list[int], prompt_tokens: int) -> Answer:
        end = next((i + 1 for i, t in enumerate(tokens) if t in self.eos_ids), None)
        kept = tokens[:end] if end is not None else tokens
        text = self.tokenizer.decode(kept, skip_special_tokens=True).strip()
        return Answer(text=text, prompt_tokens=prompt_tokens, generated_tokens=len(kept),
                      finish_reason="stop" if end is not None else "length", token_ids=kept)

    def _overflows(self, prompt_tokens: int) -> bool:
        return self.context is not None and prompt_tokens + self.max_new_tokens > self.context

    def _overflow_message(self, prompt_tokens: int) -> str:
        return (f"input of {prompt_tokens} tokens + {self.max_new_tokens} new tokens exceeds the model's context "
                f"of {self.context}")


def _first_q_proj(model: Any) -> Any:
    for name, module in model.named_modules():
        if name.endswith("self_attn.q_proj") and hasattr(module, "weight"):
            return module
    return None


def context_length(model: Any, tokenizer: Any) -> int | None:
    """The model's context, from its config (the tokenizer's limit is often a placeholder)."""
    context = getattr(model.config, "max_position_embeddings", None)
    if context is None:
        limit = getattr(tokenizer, "model_max_length", None)
        context = limit if isinstance(limit, int) and limit < 10**7 else None
    return context


def greedy_config(model: Any, tokenizer: Any, max_new_tokens: int) -> Any:
    """The checkpoint's generation config made greedy (Open-Sora sampled at temperature 0.6: runs did not
    reproduce), with our length; end-of-turn tokens from the checkpoint, else the tokenizer's."""
    generation = copy.deepcopy(model.generation_config)
    generation.do_sample = False
    generation.num_beams = 1
    generation.temperature = generation.top_p = generation.top_k = None
    generation.max_new_tokens = max_new_tokens
    generation.max_length = None
    if generation.eos_token_id is None:
        generation.eos_token_id = tokenizer.eos_token_id
    generation.pad_token_id = tokenizer.pad_token_id
    return generation
