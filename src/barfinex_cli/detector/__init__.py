"""The detector role: strategy files of weighted rules, evaluated live and over history."""
