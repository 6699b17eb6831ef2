"""Figure scripts: each reads saved results (never trains) and draws into figures/."""
