"""Browser-facing pages (the supervisor console, the crew app's built files), served by the same aiohttp app and talking to engine/ like api/ does."""
