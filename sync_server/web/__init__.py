"""Browser-facing pages (the supervisor console), served by the same aiohttp app and talking to engine/ like api/ does."""
