"""vLLM's own OpenAI chat serving code, driven by a scripted engine (runs in a vLLM venv).

Real vLLM parts: the request model (`ChatCompletionRequest`), the streaming generator
(`OpenAIServingChat.chat_completion_stream_generator`), the `minimax_m2` tool parser and the
`minimax_m2` / `minimax_m2_append_think` reasoning parsers, and the chat preprocessing
(`parse_chat_messages`, content-format detection, template rendering) with M2's chat
template. Stand-ins: the engine (yields the scripted text token by token, stops at EOS or
at the request's max_tokens) and the tokenizer (tokenizer.py).

Two module layouts are supported: vLLM 0.33.x (`Layout033`) and 0.11.x (`Layout011`).
"""

from __future__ import annotations

import asyncio
import types
from pathlib import Path

import vllm

from tokenizer import m2_tokenizer

VERSION = vllm.__version__
MODEL = "MiniMaxAI/MiniMax-M2"
TEMPLATE = (Path(__file__).resolve().parent / "m2_chat_template.jinja").read_text(encoding="utf-8")
# vLLM's own check (online renderer / serving_chat): without a tool parser, tool_choice "auto" is refused.
AUTO_WITHOUT_PARSER = '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'


class _ModelConfig:
    """The few model-config attributes the serving and preprocessing code read; the rest are None."""
    multimodal_config = None
    enable_prompt_embeds = False
    trust_remote_code = False
    model = tokenizer = MODEL
    hf_config = types.SimpleNamespace(model_type="minimax_m2")
    allowed_local_media_path = ""
    allowed_media_domains = None

    def __getattr__(self, name):
        return None


MODEL_CONFIG = _ModelConfig()


class Layout033:
    def __init__(self):
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.entrypoints.openai.chat_completion.serving import OpenAIServingChat
        from vllm.parser import ParserManager
        from vllm.renderers import hf
        from vllm.renderers.chat_utils import parse_chat_messages
        self.Request, self.Serving, self.Parsers = ChatCompletionRequest, OpenAIServingChat, ParserManager
        self.hf, self.parse_chat_messages = hf, parse_chat_messages

    def render(self, request, template: str) -> str:
        fmt = self.hf._detect_content_format(template, default="string")
        conversation, _, _ = self.parse_chat_messages(request.messages, MODEL_CONFIG, content_format=fmt)
        tools = [t.model_dump() for t in request.tools] if request.tools else None
        return self.hf.safe_apply_chat_template(MODEL_CONFIG, m2_tokenizer(), conversation, tools=tools,
                                                chat_template=template, tokenize=False, add_generation_prompt=True)

    def serving(self, tool_parser, reasoning_parser):
        s = object.__new__(self.Serving)
        s.parser_cls = self.Parsers.get_parser(
            tool_parser_name=tool_parser, reasoning_parser_name=reasoning_parser, enable_auto_tools=bool(tool_parser),
            model_name=MODEL, is_harmony=False, tool_strict_level=None, tokenizer=m2_tokenizer())
        s.enable_auto_tools = bool(tool_parser)
        s._include_reasoning_tokens_details = bool(reasoning_parser)
        for name in ("enable_force_include_usage", "enable_log_outputs", "enable_log_deltas",
                     "enable_prompt_tokens_details", "enable_per_request_metrics"):
            setattr(s, name, False)
        s.response_role, s.request_logger, s.system_fingerprint = "assistant", None, None
        s.model_config, s.default_chat_template_kwargs = MODEL_CONFIG, {}
        return s

    def generate(self, serving, request, results, meta):
        return serving.chat_completion_stream_generator(request, results, "chatcmpl-conformance", MODEL, [],
                                                        m2_tokenizer(), meta, chat_template_kwargs={})

    def output(self, text, ids, finish):
        return types.SimpleNamespace(index=0, text=text, token_ids=ids, finish_reason=finish, stop_reason=None,
                                     logprobs=None, weight_versions=None, spec_decode_metrics=None)

    def result(self, prompt_ids, out):
        return types.SimpleNamespace(prompt_token_ids=prompt_ids, encoder_prompt_token_ids=None, num_cached_tokens=0,
                                     num_cache_creation_tokens=None, prompt=None, outputs=[out],
                                     kv_transfer_params=None, metrics=None, prompt_logprobs=None)


class Layout011(Layout033):
    def __init__(self):
        from vllm.entrypoints import chat_utils
        from vllm.entrypoints.openai.protocol import ChatCompletionRequest
        from vllm.entrypoints.openai.serving_chat import OpenAIServingChat
        from vllm.entrypoints.openai.tool_parsers import ToolParserManager
        from vllm.reasoning import ReasoningParserManager
        self.Request, self.Serving, self.cu = ChatCompletionRequest, OpenAIServingChat, chat_utils
        self.ToolParsers, self.ReasoningParsers = ToolParserManager, ReasoningParserManager

    def render(self, request, template: str) -> str:
        fmt = self.cu._detect_content_format(template, default="string")
        conversation, _, _ = self.cu.parse_chat_messages(request.messages, MODEL_CONFIG, m2_tokenizer(),
                                                         content_format=fmt)
        tools = [t.model_dump() for t in request.tools] if request.tools else None
        return self.cu.apply_hf_chat_template(m2_tokenizer(), conversation, template, tools,
                                              model_config=MODEL_CONFIG, add_generation_prompt=True)

    def serving(self, tool_parser, reasoning_parser):
        s = object.__new__(self.Serving)
        s.use_harmony = False
        s.tool_parser = self.ToolParsers.get_tool_parser(tool_parser) if tool_parser else None
        s.reasoning_parser = self.ReasoningParsers.get_reasoning_parser(reasoning_parser) if reasoning_parser else None
        s.enable_auto_tools = bool(tool_parser)
        s.tool_call_id_type = "random"
        for name in ("enable_force_include_usage", "enable_log_outputs", "enable_prompt_tokens_details",
                     "return_tokens_as_token_ids"):
            setattr(s, name, False)
        s.response_role, s.request_logger, s.model_config = "assistant", None, MODEL_CONFIG
        return s

    def generate(self, serving, request, results, meta):
        return serving.chat_completion_stream_generator(request, results, "chatcmpl-conformance", MODEL, [],
                                                        m2_tokenizer(), meta)

    def output(self, text, ids, finish):
        return types.SimpleNamespace(index=0, text=text, token_ids=ids, finish_reason=finish, stop_reason=None,
                                     logprobs=None)


def _layout():
    try:
        import vllm.entrypoints.openai.chat_completion.serving  # noqa: F401  (0.33.x layout)
        return Layout033()
    except ImportError:
        return Layout011()


LAYOUT = _layout()


def request_of(body: dict):
    return LAYOUT.Request.model_validate(body)


def render(body: dict, template: str = TEMPLATE) -> str:
    """The prompt text vLLM's preprocessing and M2's template make of this request."""
    return LAYOUT.render(request_of(body), template)


def check(body: dict, tool_parser: str | None) -> str | None:
    """The 400 message vLLM answers this request with, or None."""
    if not tool_parser and body.get("tools") and body.get("tool_choice", "auto") not in (None, "none"):
        return AUTO_WITHOUT_PARSER
    return None


def engine_steps(raw: str, max_tokens: int | None, group: int = 1) -> list[tuple[str, list[int], str | None]]:
    """The scripted engine: (text, token ids, finish reason) per step; EOS at the end, or `length`
    on the max_tokens-th token when the text does not fit."""
    tok = m2_tokenizer()
    ids = tok.encode(raw, add_special_tokens=False)
    cut = max_tokens is not None and len(ids) >= max_tokens
    if cut:
        ids = ids[:max_tokens]
    steps = [[tok.decode(ids[i:i + group]), ids[i:i + group], None] for i in range(0, len(ids), group)]
    if cut:
        steps[-1][2] = "length"
    else:
        steps.append(["", [tok.eos_token_id], "stop"])
    return [tuple(s) for s in steps]


def stream(body: dict, raw: str, *, tool_parser: str | None, reasoning_parser: str | None, group: int = 1,
           template: str = TEMPLATE) -> list[str]:
    """The SSE `data:` payloads vLLM sends for a request whose model output is `raw`."""
    request = request_of(body)
    serving = LAYOUT.serving(tool_parser, reasoning_parser)
    prompt_ids = m2_tokenizer().encode(LAYOUT.render(request, template), add_special_tokens=False)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    steps = engine_steps(raw, max_tokens, group)

    async def results():
        for text, ids, finish in steps:
            yield LAYOUT.result(prompt_ids, LAYOUT.output(text, ids, finish))

    async def collect():
        meta = types.SimpleNamespace(request_id="conformance", final_usage_info=None)
        return [frame async for frame in LAYOUT.generate(serving, request, results(), meta)]

    return [f.removeprefix("data: ").rstrip("\n") for f in asyncio.run(collect())]
