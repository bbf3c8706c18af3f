"""Webhooks, one module per idea (import the module you need; these names are re-exported for
short call sites such as ``webhooks.create_endpoint``):

- :mod:`~core.services.webhooks.secrets`: signing secrets, per endpoint and the tenant's default;
- :mod:`~core.services.webhooks.endpoints`: registered endpoints (create, update, disable, ping);
- :mod:`~core.services.webhooks.outbox`: events and deliveries written with the change they
  report, and the payload;
- :mod:`~core.services.webhooks.log`: the delivery log (list, get, retry, recover, purge);
- :mod:`~core.services.webhooks.policy`: the retry schedule taken from the settings;
- :mod:`~core.services.webhooks.dispatch`: handing due deliveries to the workers, and the API's
  "send it now" use cases;
- :mod:`~core.services.webhooks.delivery`: the send task (sign, post, record, retry, disable);
- :mod:`~core.services.webhooks.guard`: the SSRF guard (:mod:`core.netguard`) as service errors.
"""

from __future__ import annotations

from core.services.webhooks.endpoints import (
    SUBSCRIBABLE_EVENTS,
    UNSET,
    EndpointPage,
    create_endpoint,
    create_ping,
    delete_endpoint,
    disable_endpoint,
    get_endpoint,
    list_endpoints,
    rotate_endpoint_secret,
    update_endpoint,
)
from core.services.webhooks.log import (
    DELIVERY_TARGETS,
    DeliveryPage,
    DeliveryView,
    get_delivery,
    list_deliveries,
    purge_old_events,
    recover_deliveries,
    retry_delivery,
)
from core.services.webhooks.outbox import (
    MAX_PAYLOAD_BYTES,
    DeliveryClaim,
    record_batch_completed,
    record_comparison_event,
    record_endpoint_disabled,
    render_payload,
    webhook_id,
)
from core.services.webhooks.secrets import (
    SECRET_OVERLAP_S,
    ensure_default_secret,
    get_default_secret,
    new_secret,
    readable_secret,
    rotate_default_secret,
    signing_secrets,
)

__all__ = [
    "DELIVERY_TARGETS",
    "MAX_PAYLOAD_BYTES",
    "SECRET_OVERLAP_S",
    "SUBSCRIBABLE_EVENTS",
    "UNSET",
    "DeliveryClaim",
    "DeliveryPage",
    "DeliveryView",
    "EndpointPage",
    "create_endpoint",
    "create_ping",
    "delete_endpoint",
    "disable_endpoint",
    "ensure_default_secret",
    "get_default_secret",
    "get_delivery",
    "get_endpoint",
    "list_deliveries",
    "list_endpoints",
    "new_secret",
    "purge_old_events",
    "readable_secret",
    "record_batch_completed",
    "record_comparison_event",
    "record_endpoint_disabled",
    "recover_deliveries",
    "render_payload",
    "retry_delivery",
    "rotate_default_secret",
    "rotate_endpoint_secret",
    "signing_secrets",
    "update_endpoint",
    "webhook_id",
]
