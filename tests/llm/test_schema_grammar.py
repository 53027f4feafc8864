"""The JSON-schema grammar the local model writes under (no model needed)."""

from __future__ import annotations

from llama_cpp import LlamaGrammar

from spotline.llm.providers.local import schema_grammar


def test_strings_in_the_schema_grammar_refuse_raw_control_characters_as_json_does():
    # llama-cpp-python's converter allowed them: a raw newline in a string made json.loads fail.
    gbnf = schema_grammar({"type": "object", "required": ["a", "b"],
                           "properties": {"a": {"type": "string", "maxLength": 4}, "b": {"type": "string"}}})
    (char,) = [line for line in gbnf.splitlines() if line.startswith("char ::=")]
    assert char.startswith('char ::= [^"\\\\\\x7F\\x00-\\x1F] |')
    LlamaGrammar.from_string(gbnf, verbose=False)  # and llama.cpp's parser takes it
