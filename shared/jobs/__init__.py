"""Jobs: submitting, claiming, storing outcomes, finishing, reading and retiring them."""
