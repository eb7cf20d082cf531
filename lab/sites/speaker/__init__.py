"""The site's BGP speaker: ExaBGP 5 and the API process that tells it what to announce."""
