"""SMPP 3.4 and USSD without I/O: nothing here imports asyncio, opens a socket or reads a clock.

    pdu.py      the PDUs as frozen dataclasses, command ids, statuses, TLV tags
    codec.py    bytes <-> PDUs (smpplib underneath, a fast path for the hot PDUs)
    session.py  SmppSession for either end: framing, numbering, the bind states as one table,
                the outstanding requests with their deadlines
    text.py     data_coding: decode, choose, encode, split
    concat.py   long messages: UDH parts and their reassembly
    ussd.py     the dialled string, its_session_info, the dialogue for the network and the phone
    receipt.py  delivery receipts: the text format both ways, and the TLVs

The asyncio side that moves the bytes is `ussdgw.link`; tests/test_smpp_layers.py keeps it so.
"""
