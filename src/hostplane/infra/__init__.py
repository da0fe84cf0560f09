"""Infrastructure: locations, nodes, templates and the servers that run on them."""
