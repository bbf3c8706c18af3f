"""The outgoing-request guard (SSRF protection), below the use cases: it imports nothing of ours.

- :mod:`core.netguard.classify`: pure URL and IP rules (strict parsing, every IP-literal
  encoding normalised, forbidden ranges, the allow-list's text form);
- :mod:`core.netguard.resolve`: name resolution with a time limit, every address checked;
- :mod:`core.netguard.transport`: a POST pinned to the checked addresses (no DNS rebinding, no
  redirects, no proxies, one deadline for the whole call).

A URL is checked when it is registered (``resolve.validate_url``) and again each time it is
called (``transport.pinned_post``). Callers pass plain values (the allowed networks, timeouts);
the webhooks use cases turn its errors into service errors (``core.services.webhooks.guard``).
"""
