"""The LaMP family: `model` (LaMP: vision backbone, LLM action expert, motion expert, bridges), its parts
(`vision`, `bridge`, `motion`, `lifting`, `depth`, `action_tokenizer`, `text_tokenizer`), `config` (presets),
`checkpoint` (the on-disk format), `policies` (the registry variants) and `profiling` (per-component latency)."""
