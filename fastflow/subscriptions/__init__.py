"""The Subscriptions service (docs/webhooks.md): subscriptions over the
engine's durable consumers, and delivery of their events to sinks
(``fastflow.subscriptions.webhook``: CloudEvents HTTP webhooks)."""
