"""`respool dashboard`: a read-only web view of every pool's timeline, served locally.

- `views`: what the browser is sent about a pool or a reservation (pure functions);
- `store`: the objects seen, kept current by list+watch threads, fanned out to the browsers;
- `server`: the aiohttp application (page, assets, a server-sent event stream, details);
- ``static/``: the page, plain HTML, CSS and JavaScript shipped in the package (no build step,
  nothing fetched from elsewhere).
"""
