"""Guardrails (prompt and output policy) and provenance (C2PA content credentials, invisible watermark).

Public functions, one module each (import them from there; this package imports nothing heavy):

    policy.load_policy(path=None) -> Policy            default policy, or a TOML/JSON deployment file
    policy.check_prompt(prompt, policy) -> Decision    action "block" | "warn" | "allow", category, score, reason
    policy.check_image(img, policy, classifier=None)   the output-image hook (pluggable classifier)
    policy.audit(decision, prompt, log_path, keep_raw=False)   one JSONL line per decision
    policy.openai_error(decision)                      {"error": {..., "code": "content_policy_violation"}}
    provenance.sign_image(data, fmt, *, title, model, model_version, parameters, ingredient=None, keys_dir=None)
    provenance.verify(data, fmt) -> dict                state, trust, model, actions, ingredients, failures
    provenance.strip(data, fmt) -> bytes
    provenance.ensure_dev_keys(keys_dir=None) / create_dev_keys(keys_dir) / key_id(keys_dir)
    watermark.embed(img, payload) -> img                payload <= 4 bytes, e.g. watermark.make_payload(model, key_id)
    watermark.detect(img) -> (found, payload, confidence)

Data, and how it was made: incasa/safety/data/README.md. Measurements: benchmarks/guardrails.py,
benchmarks/watermark.py, benchmarks/c2pa_signing.py.
"""
