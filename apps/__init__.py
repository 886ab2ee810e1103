"""The apps on top: the `emoverse` CLI (apps/cli/) and the HTTP server (apps/server/), which
check generation requests with the same rules (apps/requests.py). They may import flows, tasks
and models; nothing below imports them."""
