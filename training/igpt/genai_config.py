"""genai_config.json of a model package: lets onnxruntime-genai load the package's decoder.onnx."""
from __future__ import annotations

from typing import Any, Dict

from .model import IGptConfig


def build_genai_config(cfg: IGptConfig) -> Dict[str, Any]:
    """onnxruntime-genai's config: "llama" is its generic decoder-only model (input_ids,
    attention_mask, position_ids, per-layer BNSH past/present)."""
    sos = cfg.sos_token_id
    return {
        "model": {
            "bos_token_id": sos,
            "context_length": cfg.n_positions,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": "decoder.onnx",
                "head_size": cfg.head_size,
                "hidden_size": cfg.n_embd,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "position_ids": "position_ids",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
                "num_attention_heads": cfg.n_head,
                "num_hidden_layers": cfg.n_layer,
                "num_key_value_heads": cfg.n_head,
            },
            "eos_token_id": sos,
            "pad_token_id": sos,
            "type": "llama",
            "vocab_size": cfg.vocab_size,
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": True,
            "early_stopping": False,
            "length_penalty": 1.0,
            "max_length": cfg.n_positions,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": True,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 0,
            "top_p": 1.0,
        },
    }
