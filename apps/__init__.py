"""The apps on top: the `emoverse` CLI (and, after the serve rewrite lands, the HTTP server).
They may import flows, tasks and models; nothing below imports them."""
