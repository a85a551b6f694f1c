"""omo-mailbot: triage for the Omo@minbzk.nl mailbox of the Ondersteuningsnetwerk maatschappelijke onrust."""

__version__ = "0.1.0"
