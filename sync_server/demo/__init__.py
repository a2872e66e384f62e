"""Demo city for a first run: real-data-shaped tickets, crews, devices and printed credentials."""
