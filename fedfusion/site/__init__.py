"""The site's side of a round: the ClientApp and its mods, the site's round, trainer, node context and replay."""
