"""The sham baseline's context: a neutral conversation as long as an agent's game history.

Pre-play profiles are asked after the system prompt alone and post-play profiles after the whole game, so
post − pre mixes what the game did with what any long context does to a model (answers that drift toward
½ as the context grows look like contagion from a pro-social baseline). The *sham* profile asks the same
items after a history of the same shape and length with nothing of the game in it; post − sham is the
game's effect beyond its length.

* :func:`strip_injections` — a history without the messages an intervention injected (``meta.kind ==
  "injection"``): the post-play measurement of record, so no intervention is judged in the presence of its
  own words.
* :func:`neutral_history` — the same leading system message(s) unchanged (the agent's rules and persona),
  then every other message replaced by neutral conversation text of the **same role and the same length in
  characters** (exactly, for every message; an empty message stays empty). The text is drawn
  deterministically (from ``seed``) from a bank of everyday sentences written for this purpose — food,
  gardens, walks, books, trains, furniture, music — with no trait, moral, game or threat content (and
  nothing on the weather or mathematics, the topics of the control traits). Sentences are dealt from a
  shuffled deck and only reshuffled once every one has been used, so a long game's sham does not repeat
  itself early; a message ends with part of a sentence and, where a few characters are left, a filler word
  of exactly that length, so lengths match to the character. Characters, not tokens: token counts depend on
  the model's tokenizer, so the record states both contexts' prompt tokens where the backend reports them.
  The neutral messages carry ``meta={"kind": "neutral"}`` and nothing else, so no simulated model reads
  game exposure from them.

The lengths match in characters; tokens follow characters only roughly (prose and a game's transcript
tokenize at slightly different rates), which is why the trial records both.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from contagion import vocabulary as P
from contagion.messages import Message

NEUTRAL = "neutral"
"""The ``meta.kind`` of a sham history's neutral messages (no simulated model reads it as game content)."""

BANK: tuple[str, ...] = (
    "I made a pot of vegetable soup this afternoon with carrots, leeks and a handful of lentils.",
    "The bakery on the corner has started selling a dark rye loaf with caraway seeds.",
    "We spent the morning repotting the basil and moving the tomato plants closer to the window.",
    "My neighbour lent me a book about the history of canals in the north of England.",
    "The train along the coast stops at every small station, so the journey takes most of the day.",
    "I finally hung the shelves in the hallway, and the books look much tidier there.",
    "There is a little museum of clocks in the old town that hardly anyone visits.",
    "The recipe asks for two onions, but I usually add a third and some garlic as well.",
    "A pair of blackbirds has been building a nest in the hedge behind the shed.",
    "I have been learning to play a few simple songs on the ukulele in the evenings.",
    "The market had plenty of plums today, so I bought enough to make a crumble.",
    "We walked along the river path as far as the old stone bridge and then turned back.",
    "The library moved the travel section upstairs, next to the atlases and the maps.",
    "My sister is painting her kitchen a pale green colour with white trim around the doors.",
    "The new bicycle lane runs all the way from the station to the park gates.",
    "I tried a recipe for flatbread that only needs flour, water, salt and a hot pan.",
    "The cinema in town is showing an old film about a lighthouse keeper and his dog.",
    "Our street has a small community garden where people grow beans and sunflowers.",
    "I like to listen to the radio while I cook, mostly programmes about music.",
    "The ferry to the island leaves twice a day and the crossing takes about an hour.",
    "We found a second-hand armchair with wooden arms and a faded blue cushion.",
    "The hedgehog that visits the garden seems to like the pile of leaves by the fence.",
    "I borrowed a sewing machine to shorten a pair of curtains for the bedroom.",
    "The path through the woods is lined with ferns and, in spring, with bluebells.",
    "My grandfather used to keep bees, and he always had jars of honey on the dresser.",
    "There is a stall at the weekend market that sells nothing but different kinds of mushrooms.",
    "I rearranged the living room so that the sofa faces the window instead of the wall.",
    "The old railway line has been turned into a walking trail with benches along the way.",
    "A friend sent me a postcard from a village famous for its pottery and blue glazes.",
    "The orchard down the lane has apples, pears and a single very old walnut tree.",
    "I have started keeping a notebook of the birds I see from the kitchen window.",
    "We cooked rice with peas and a little butter, and it was better than expected.",
    "The hardware shop still sells nails by weight from big wooden drawers.",
    "My cousin is learning to bake sourdough and sends me photographs of every loaf.",
    "The canal boats move so slowly that ducks swim alongside them for a while.",
    "I replaced the bulb in the reading lamp with a warmer one, and the room feels softer.",
    "The botanical garden has a glasshouse full of ferns, palms and hanging orchids.",
    "We planted a row of lettuce, a row of radishes and some marigolds at the end.",
    "There is a bookshop by the harbour that keeps a cat asleep in the window.",
    "I spent an hour sorting old photographs into albums by the places they were taken.",
    "The bus route was changed, so it now goes past the swimming pool and the library.",
    "My aunt knits scarves in bright colours and gives them away to anyone who asks.",
    "The cafe near the station makes a very good pot of mint tea with fresh leaves.",
    "We took the long way home past the allotments and the little chapel on the hill.",
    "I oiled the hinges on the garden gate, and it no longer squeaks when it opens.",
    "The children at the end of the road have drawn a chalk map of the whole street.",
    "A new choir meets in the church hall on Thursdays and sings mostly folk songs.",
    "I tried growing strawberries in a hanging basket, and a few of them are ripening.",
    "The walk up to the viewpoint takes about forty minutes at an easy pace.",
    "My brother restores old radios and has a shelf full of valves and dials.",
    "We had pancakes for breakfast with sliced bananas and a spoonful of yoghurt.",
    "The river was high after the rain, and the stepping stones were under water.",
    "I found a cookbook from the seventies with a whole chapter on jellies and moulds.",
    "The fabric shop has a basket of remnants that are perfect for patchwork.",
    "There is a small pond in the park where people sail model boats on Sundays.",
    "I put up a feeder for the sparrows, and they empty it within a day or two.",
    "The old mill has been turned into flats, but the waterwheel still turns slowly.",
    "My friend is building a bookcase from reclaimed floorboards in her garage.",
    "We listened to a concert of piano music in the town hall on Saturday evening.",
    "I sanded the kitchen table and gave it two coats of clear varnish.",
    "The path along the cliffs is narrow in places, but the views are wide open.",
    "A travelling puppet theatre set up its tent on the green for the weekend.",
    "I have been trying to learn the names of the trees along the avenue.",
    "The greengrocer had fresh peas in their pods, which always take a while to shell.",
    "We borrowed a tent and spent a night by the lake listening to the frogs.",
    "The village fete had a cake stall, a tombola and a display of vintage tractors.",
    "I cleaned the windows on the landing, and the stairs are much brighter now.",
    "There is a street in the old quarter where every door is painted a different colour.",
    "My uncle grows chillies on his balcony and dries them on a string in the kitchen.",
    "We made a salad with beetroot, orange slices and a few walnuts on top.",
    "The tram goes up the hill so slowly that you can read the names on the shop signs.",
    "I found an old map of the town in a drawer, with fields where the houses are now.",
    "The swans on the lake have four grey cygnets that follow them everywhere.",
    "We spent the afternoon at a craft market looking at baskets, candles and wooden spoons.",
    "My friend plays the cello in a small orchestra that rehearses in a school hall.",
    "I baked a batch of oat biscuits with raisins and a little cinnamon.",
    "The footpath crosses three stiles and a stream before it reaches the farm.",
    "There is a flower shop that puts buckets of tulips on the pavement every morning.",
    "I repainted the front door a deep red, and the brass knocker looks new again.",
    "The kettle in the office has been replaced with one that whistles when it boils.",
    "We visited a garden where the paths wind between hedges of lavender and rosemary.",
    "My neighbour collects teapots and has one shaped like a small cottage.",
    "The harbour was full of fishing boats with nets piled on their decks.",
    "I tried making jam from the blackberries we picked along the lane.",
    "The bookshelf in the spare room holds mostly atlases, cookbooks and old novels.",
    "We followed a signposted trail through the forest to a waterfall and a picnic spot.",
    "The carpenter down the road makes chairs with woven rush seats.",
    "I have been listening to an audiobook about the building of old cathedrals.",
    "The allotment next to ours has a scarecrow wearing a straw hat and a striped scarf.",
    "We roasted potatoes with rosemary and served them with green beans.",
    "A narrow staircase leads up to a little gallery of landscape paintings.",
    "My friend has started a vegetable patch and has picked her first courgettes.",
    "The station has a piano in the waiting room that anyone may sit down at.",
    "I swapped the heavy curtains for lighter ones, and the room feels larger.",
    "The lane to the farm is lined with blackthorn, elder and wild roses.",
    "We spent a quiet evening doing a jigsaw of a harbour with red and blue boats.",
    "The corner shop has started stocking fresh bread from a bakery in the next village.",
    "I planted a climbing rose by the porch and tied it loosely to a wooden trellis.",
    "There is a long, flat beach where people walk their dogs early in the morning.",
    "My mother has a recipe for lemon cake that she copied from a magazine years ago.",
    "The old cinema organ is played for a few minutes before every Sunday matinee.",
    "We bought a small rug with a pattern of leaves for the hallway.",
    "The geese fly over the marsh every evening on their way to the estuary.",
    "I spent the morning weeding the gravel path and trimming the edges of the lawn.",
    "The exhibition at the gallery is about the printing of posters and book covers.",
    "We made a simple curry with chickpeas, spinach and tomatoes.",
    "The lighthouse on the point is open to visitors on summer afternoons.",
    "My friend is learning the accordion and practises sea shanties in her kitchen.",
    "I found a pair of old garden chairs at a sale and painted them yellow.",
    "The brook behind the school runs clear over pebbles and small grey stones.",
    "We walked through the market looking at spices, dried fruit and bolts of cloth.",
    "The wooden bench by the pond has a small plaque with the name of the park's founder.",
    "I put a bowl of lemons on the table, and it brightens the whole kitchen.",
    "The village has a little post office that also sells stamps, string and birthday cards.",
    "We tried a new walk that follows the edge of the heath to an old windmill.",
    "My neighbour showed me how to prune the apple tree so that it gets more light.",
    "The stairs creak on the third and seventh steps, which I have started to find charming.",
)
"""Everyday sentences with no trait, moral, game or threat content (and nothing on the weather or
mathematics, the control traits' topics)."""

_OPENERS: tuple[str, ...] = ("Also,", "Earlier,", "By the way,", "Oh, and", "Last week", "This morning",
                             "Yesterday", "Anyway,", "Meanwhile,", "Later on,")
_FILLERS: dict[int, tuple[str, ...]] = {
    1: ("a",), 2: ("so", "on", "at"), 3: ("and", "too", "now"), 4: ("then", "also", "here"),
    5: ("later", "again", "quite"), 6: ("indeed", "lately", "nearby"), 7: ("outside", "usually", "already"),
    8: ("recently", "together", "sometime"), 9: ("yesterday", "meanwhile", "somewhere"),
    10: ("afterwards", "downstairs", "everywhere"), 11: ("comfortably", "nonetheless"),
    12: ("occasionally", "surroundings"),
}
_MAX_FILLER = max(_FILLERS)


class _Deck:
    """The bank's sentences dealt in a seeded shuffle, reshuffled only when every sentence has been dealt."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.left: list[int] = []
        self.last = -1

    def put_back(self) -> None:
        """Return the sentence last dealt (only part of it was used) to a random place among those left."""
        self.left.insert(self.rng.randrange(len(self.left) + 1), self.last)

    def deal(self) -> str:
        if not self.left:
            self.left = list(range(len(BANK)))
            self.rng.shuffle(self.left)
        self.last = self.left.pop()
        sentence = BANK[self.last]
        if self.rng.random() < 0.2:  # an opener now and then: a reshuffled deck never repeats a message verbatim
            opener = self.rng.choice(_OPENERS)
            sentence = f"{opener} {sentence[0].lower()}{sentence[1:]}" if not sentence.startswith("I ") else \
                f"{opener} {sentence}"
        return sentence


def _filler(length: int, rng: random.Random) -> str:
    return rng.choice(_FILLERS[length])


def neutral_text(length: int, deck: _Deck) -> str:
    """Neutral text of exactly ``length`` characters: whole sentences, then the words of one more that fit
    (that sentence goes back into the deck), then filler words (and at most one final full stop) making up
    the last few characters."""
    out = ""
    while len(out) < length:
        sentence = deck.deal()
        piece = sentence if not out else " " + sentence
        if len(out) + len(piece) <= length:
            out += piece
            continue
        for word in sentence.split():
            piece = word if not out else " " + word
            if len(out) + len(piece) > length:
                break
            out += piece
        deck.put_back()  # only its first words were used: it is dealt again, whole, later
        break
    while len(out) < length:
        room = length - len(out) - (1 if out else 0)
        if room <= 0:
            out += "."
            continue
        size = room if room <= _MAX_FILLER else (_MAX_FILLER if room - _MAX_FILLER >= 2 else _MAX_FILLER - 2)
        out += (" " if out else "") + _filler(size, deck.rng)
    return out


def strip_injections(history: Sequence[Message]) -> list[Message]:
    """``history`` without the messages an intervention injected (``meta.kind == "injection"``), in order."""
    return [m for m in history if m.meta.get(P.KIND) != P.INJECTION]


def leading_system(history: Sequence[Message]) -> int:
    """How many messages at the start of ``history`` are system messages (the agent's rules and persona)."""
    n = 0
    for m in history:
        if m.role != "system":
            break
        n += 1
    return n


def neutral_history(history: Sequence[Message], *, seed: int) -> list[Message]:
    """A neutral history shaped like ``history``: its leading system message(s) unchanged, then one neutral
    message per remaining message, of the same role and exactly the same length in characters, with
    ``meta={"kind": "neutral"}`` only (no name, no game facts). Deterministic in ``seed`` and the history's
    roles and lengths (its text is never read). Strip injections first (:func:`strip_injections`) where the
    sham should match the history the post-play profile is measured after."""
    head = leading_system(history)
    deck = _Deck(random.Random(f"sham|{seed}"))
    out = list(history[:head])
    for m in history[head:]:
        out.append(Message(role=m.role, content=neutral_text(len(m.content), deck), meta={P.KIND: NEUTRAL}))
    return out


def context_chars(messages: Sequence[Message]) -> int:
    """The characters of a context's messages (their content), the length the sham matches."""
    return sum(len(m.content) for m in messages)
