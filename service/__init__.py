"""The HTTP service: the jobs API, the OpenAI-compatible speech endpoint, webhooks and the dashboard.

Stateless: any number of `ttsfleet serve` processes may run behind a load balancer; everything they know
is in the SQL store. It imports `producer` and `schemas`, never `worker` or torch, so it starts fast and
never loads a model.
"""
