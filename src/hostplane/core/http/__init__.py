"""The HTTP edge shared by every router: envelope, errors, middleware, dependencies."""
