"""A tiny random-init causal LM with a locally trained tokenizer and hand-written chat templates.

Built at test time, offline, in a few seconds, so token-level code (``TokenEnv``, ``HFPolicy``, rollouts)
can run end to end without downloading a model. The model is ``LlamaForCausalLM`` (hidden 64, 2 layers,
2 heads of dim 32, vocab ~2k); the tokenizer is a byte-level BPE trained with ``tokenizers`` on the
bundled CodeExec prompts plus a few lines of multilingual text, wrapped as a ``PreTrainedTokenizerFast``.
Its output is random text: rewards are 0, which is what the plumbing tests need.

Three chat-template families (``CHAT_TEMPLATES``), each with the special tokens it needs in the vocabulary:

* ``"chatml"``: Qwen-2.5 style, a tools list in the system turn, assistant ``tool_calls`` rendered as
  ``<tool_call>`` blocks, consecutive tool results grouped in one user turn of ``<tool_response>`` blocks.
* ``"llama3"``: Llama-3 style headers and ``<|eot_id|>``, tools listed in the system turn, tool results in
  ``ipython`` turns.
* ``"chatml_drop_think"``: ``"chatml"``, except that ``<think>...</think>`` is dropped from every assistant
  message before the last user message (as Qwen3's template does): a template that rewrites history.

``size="0.5b"`` builds the same kind of random model with the body of a real small chat model (Qwen2.5-0.5B's
layer count and widths, ~360M parameters without the embeddings, 1.4 GB in fp32): its text is as random,
but each generated token costs what a real 0.5B policy's does, which is what the collector benchmark needs
to measure the env's share of a real rollout's time offline.

Requires the ``[hf]`` extra (torch, transformers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
)

# Every literal is inside an expression ({{- '...' }}), so whitespace control never eats a newline.
_CHATML_SYSTEM = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools><|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
)

_CHATML_BODY = (
    "{%- for message in messages %}"
    "{%- if message.role == 'system' and loop.first %}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}CONTENT"
    "{%- for call in message.tool_calls or [] %}"
    "{{- '\\n<tool_call>\\n' + ({'name': call.function.name, 'arguments': call.function.arguments} | tojson)"
    " + '\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

CHATML_TEMPLATE = _CHATML_SYSTEM + _CHATML_BODY.replace("CONTENT", "{{- message.content }}")

CHATML_DROP_THINK_TEMPLATE = (
    "{%- set ns = namespace(last_user=-1) %}"
    "{%- for message in messages %}{%- if message.role == 'user' %}{%- set ns.last_user = loop.index0 %}"
    "{%- endif %}{%- endfor %}"
    + _CHATML_SYSTEM
    + _CHATML_BODY.replace(
        "CONTENT",
        "{%- if loop.index0 < ns.last_user and '</think>' in message.content %}"
        "{{- message.content.split('</think>')[-1].lstrip('\\n') }}"
        "{%- else %}{{- message.content }}{%- endif %}",
    )
)

LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if tools %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{- 'You can call these functions:' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' and loop.first and tools %}"
    "{%- else %}"
    "{{- '<|start_header_id|>' + ('ipython' if message.role == 'tool' else message.role) + '<|end_header_id|>\\n\\n' }}"
    "{{- message.content + '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

#: name -> (template, end-of-turn token the model emits to end its message)
CHAT_TEMPLATES: dict[str, tuple[str, str]] = {
    "chatml": (CHATML_TEMPLATE, "<|im_end|>"),
    "llama3": (LLAMA3_TEMPLATE, "<|eot_id|>"),
    "chatml_drop_think": (CHATML_DROP_THINK_TEMPLATE, "<|im_end|>"),
}

_EXTRA_TEXT = """\
<think>
Let me think step by step about the function and its edge cases.
</think>
<tool_call>
{"name": "execute_python", "arguments": {"code": "print(sum(range(10)))"}}
</tool_call>
<tool_response>
exit code 0
stdout:
45
</tool_response>
Here is my solution:
```python
def add(a: int, b: int) -> int:
    return a + b
```
Grüße aus Zürich — naïve café, señor. Ελληνικά, русский текст, 日本語のテキスト, 中文文本, 한국어, עברית, العربية.
Emoji: 🙂🚀🎉 👩‍💻 — math: ∑ ∫ √ ≤ ≥ ≠ ∞ π.
"""


def _corpus() -> list[str]:
    from gym_nemo.core.env import TOOL_PROMPT
    from gym_nemo.envs.code_exec import CodeExecEnv

    texts = [row["responses_create_params"]["input"][0]["content"] for row in CodeExecEnv.bundled_rows()]
    return [*texts, TOOL_PROMPT, _EXTRA_TEXT * 4]


def build_tokenizer(template: str = "chatml", vocab_size: int = 2048) -> Any:
    """A byte-level BPE tokenizer trained on the local corpus, with ``template``'s chat template.

    ``eos_token`` is the template's end-of-turn token (what generation stops on), ``bos_token`` is
    ``<|begin_of_text|>`` and ``pad_token`` ``<|endoftext|>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    chat_template, end_of_turn = CHAT_TEMPLATES[template]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token=end_of_turn,
        pad_token="<|endoftext|>",
        chat_template=chat_template,
        clean_up_tokenization_spaces=False,
    )


MODEL_SIZES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 2, "head_dim": 32},
    "0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
             "num_key_value_heads": 2, "head_dim": 64},
}  # fmt: skip


def build_tiny_model(path: str | Path, template: str = "chatml", *, seed: int = 0, size: str = "tiny") -> Path:
    """Write a random-init ``LlamaForCausalLM`` (fp32, ``MODEL_SIZES[size]``) and its tokenizer to ``path``;
    return ``path``.

    Loadable with ``AutoModelForCausalLM.from_pretrained(path)`` / ``AutoTokenizer.from_pretrained(path)``.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = build_tokenizer(template)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        **MODEL_SIZES[size],
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
