"""Online experiments between models: design, assignment, routing, events, statistics."""
