"""Development tools shared by the tests, the bench and the demo: not part of the product."""
