"""GA4GH DRS 1.4: objects by id, bundles for analyses, access URLs."""
