"""Thin routers: parse the request, call a service or an engine, shape the OpenAI answer. No tensors here."""
