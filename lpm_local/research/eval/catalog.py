"""Tastes that synthetic users hold, change, explain and act on (data for ``personamem.py``).

MSC personas give facts ("I am a nurse.") but no structure to ask "what is new for me?" or
"why did I switch?". Here each topic has four tastes, and each taste the things the PersonaMem
question types need: reasons to hold it, one thing the user already did (mentioned in the
history), one new idea (never mentioned: "suggest new ideas"), a recommendation, and an answer
to a scenario the user never discussed ("generalise to new scenarios"). Distractors come from
the other tastes of the same topic, so every option has the same shape and only memory of this
user separates them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Taste:
    value: str  # "jazz": what the user is into
    reasons: tuple[str, str]  # clauses after "because"
    done: str  # something the user already tried (stated in the history)
    new_idea: str  # something new for them (never stated)
    recommendation: str
    scenario: str  # the answer to the topic's scenario question for this taste


@dataclass(frozen=True)
class Topic:
    name: str
    noun: str  # "music": "What kind of music am I into these days?"
    rec_prompt: str
    scenario_prompt: str
    tastes: tuple[Taste, Taste, Taste, Taste]


def _t(value, r1, r2, done, new, rec, scen) -> Taste:
    return Taste(value, (r1, r2), done, new, rec, scen)


TOPICS: tuple[Topic, ...] = (
    Topic(
        "music",
        "music",
        "Can you recommend an album for me?",
        "I'm throwing a small dinner party. What should I put on in the background?",
        (
            _t(
                "jazz",
                "it helps me unwind after long shifts",
                "my grandfather used to play it on vinyl",
                "a late-night jam session at a jazz bar",
                "learning a few standards on the upright bass",
                "Kind of Blue by Miles Davis",
                "a smooth jazz trio playlist",
            ),
            _t(
                "heavy metal",
                "it is the best thing to lift weights to",
                "a friend took me to a festival and I was hooked",
                "a Metallica tribute concert",
                "a double-bass drumming workshop",
                "Master of Puppets by Metallica",
                "a playlist of classic thrash anthems",
            ),
            _t(
                "classical music",
                "it helps me concentrate while I study",
                "I started piano lessons again",
                "a Beethoven symphony at the concert hall",
                "joining a community choir that sings Mozart",
                "the Goldberg Variations played by Glenn Gould",
                "a string quartet recording of Vivaldi",
            ),
            _t(
                "country music",
                "it reminds me of road trips with my dad",
                "the storytelling in the lyrics gets me",
                "a line-dancing night at the local saloon",
                "learning to play slide guitar",
                "Golden Hour by Kacey Musgraves",
                "a playlist of mellow acoustic country songs",
            ),
        ),
    ),
    Topic(
        "food",
        "food",
        "Where should I eat tonight? Any recommendation?",
        "I'm hosting friends for dinner on Saturday. What should I cook?",
        (
            _t(
                "Thai food",
                "I fell in love with it on a trip to Bangkok",
                "I love how spicy and fresh it is",
                "a green curry cooking class",
                "making your own curry paste from scratch",
                "a bowl of khao soi from a street-food stall",
                "a big pot of green curry with jasmine rice",
            ),
            _t(
                "Italian cooking",
                "my new neighbour from Naples taught me",
                "nothing beats fresh pasta",
                "a hand-made pasta workshop",
                "baking Neapolitan pizza in a wood-fired oven",
                "a plate of cacio e pepe at a family trattoria",
                "a tray of homemade lasagne",
            ),
            _t(
                "vegan cooking",
                "I want to eat more sustainably",
                "my doctor told me to cut down on meat",
                "a plant-based meal-prep course",
                "fermenting your own cashew cheese",
                "a jackfruit taco bowl at a vegan cafe",
                "a colourful chickpea and roasted vegetable feast",
            ),
            _t(
                "barbecue",
                "my brother bought a smoker and got me hooked",
                "I love cooking outdoors all weekend",
                "a Texas-style brisket competition",
                "cold-smoking your own cheese and salmon",
                "a rack of smoked ribs at a roadside pit",
                "slow-smoked pulled pork with coleslaw",
            ),
        ),
    ),
    Topic(
        "fitness",
        "exercise",
        "Can you recommend something to buy for my workouts?",
        "I have a free hour on my lunch break. How should I spend it?",
        (
            _t(
                "running",
                "it clears my head before work",
                "I signed up for a charity race",
                "a half marathon along the river",
                "a trail-running ultramarathon",
                "a pair of cushioned road-running shoes",
                "a quick 5k loop around the park",
            ),
            _t(
                "yoga",
                "it helps with my back pain",
                "it calms my anxiety",
                "a weekend yoga retreat",
                "aerial yoga on silks",
                "a thick non-slip yoga mat",
                "a short vinyasa flow in a quiet room",
            ),
            _t(
                "rock climbing",
                "I love solving routes like puzzles",
                "my partner got me into it",
                "an outdoor climbing trip to the cliffs",
                "lead climbing on multi-pitch routes",
                "a pair of aggressive bouldering shoes",
                "a bouldering session at the nearby gym",
            ),
            _t(
                "swimming",
                "it is easy on my knees",
                "I grew up by the sea",
                "a one-mile open-water swim",
                "training for a swim-run race",
                "a pair of anti-fog racing goggles",
                "a few relaxed laps at the public pool",
            ),
        ),
    ),
    Topic(
        "reading",
        "books",
        "Can you recommend a book for me?",
        "I have a long flight next week. What should I bring to read?",
        (
            _t(
                "science fiction",
                "I like imagining the future",
                "a friend lent me Dune",
                "the whole Foundation series",
                "writing your own short sci-fi story",
                "The Left Hand of Darkness by Ursula K. Le Guin",
                "a thick space-opera novel",
            ),
            _t(
                "historical fiction",
                "it makes the past feel alive",
                "my book club picked Wolf Hall",
                "Wolf Hall by Hilary Mantel",
                "visiting the castles where the stories take place",
                "All the Light We Cannot See by Anthony Doerr",
                "a sweeping novel set in Tudor England",
            ),
            _t(
                "mystery novels",
                "I love guessing the killer before the end",
                "my mum reads them and we swap books",
                "every Agatha Christie novel",
                "an escape room with a detective theme",
                "The Thursday Murder Club by Richard Osman",
                "a twisty whodunit paperback",
            ),
            _t(
                "poetry",
                "it says a lot in very few words",
                "I started writing again after a breakup",
                "an open-mic poetry night",
                "entering a haiku-writing contest",
                "Devotions by Mary Oliver",
                "a slim collection of modern poems",
            ),
        ),
    ),
    Topic(
        "travel",
        "travel",
        "Can you recommend a trip for me?",
        "I have a long weekend coming up. Where should I go?",
        (
            _t(
                "beach holidays",
                "I need the sun after a long winter",
                "I love snorkelling",
                "a week of snorkelling in Crete",
                "learning to kitesurf in Tarifa",
                "a quiet beach resort in the Algarve",
                "a sunny coastal town with a sandy beach",
            ),
            _t(
                "city breaks",
                "I love museums and cafes",
                "I get bored lying on a beach",
                "a weekend of museum-hopping in Vienna",
                "a street-food walking tour in Lisbon",
                "three days exploring the old town of Prague",
                "a museum-packed weekend in a big city",
            ),
            _t(
                "hiking trips",
                "being in the mountains recharges me",
                "I want to see more of nature",
                "the Tour du Mont Blanc",
                "trekking between mountain huts in the Dolomites",
                "a hut-to-hut trek in the Scottish Highlands",
                "a cabin near a mountain trail",
            ),
            _t(
                "road trips",
                "I love the freedom of the open road",
                "I just bought an old camper van",
                "a drive along the Pacific Coast Highway",
                "a camper-van loop around Iceland",
                "a week driving Route 66",
                "a scenic drive with stops at small towns",
            ),
        ),
    ),
    Topic(
        "film",
        "movies",
        "Can you recommend a movie for me?",
        "I'm having a movie night with friends. What should we watch?",
        (
            _t(
                "horror films",
                "I love the adrenaline",
                "my roommate and I watch them every Friday",
                "a midnight screening of The Shining",
                "a haunted-house film festival",
                "Hereditary",
                "a creepy haunted-house thriller",
            ),
            _t(
                "romantic comedies",
                "they always cheer me up",
                "they remind me of my twenties",
                "a Nora Ephron movie marathon",
                "a rom-com screenwriting workshop",
                "When Harry Met Sally",
                "a feel-good love story with lots of laughs",
            ),
            _t(
                "documentaries",
                "I like learning something real",
                "a nature series got me hooked",
                "every episode of Planet Earth",
                "making a short documentary about your neighbourhood",
                "My Octopus Teacher",
                "an eye-opening nature documentary",
            ),
            _t(
                "animated films",
                "the artwork is stunning",
                "I started watching them with my nephew",
                "a Studio Ghibli retrospective",
                "an evening stop-motion animation class",
                "Spirited Away",
                "a colourful animated adventure",
            ),
        ),
    ),
    Topic(
        "games",
        "games",
        "Can you recommend a game for me?",
        "My cousins are visiting this weekend. What could we do together?",
        (
            _t(
                "board games",
                "they get my friends off their phones",
                "I love strategy",
                "a twelve-hour Twilight Imperium session",
                "designing your own board game",
                "Wingspan",
                "a strategy board game night",
            ),
            _t(
                "video games",
                "they help me switch off",
                "I reconnected with old friends online",
                "finishing Elden Ring",
                "trying speedrunning",
                "Hades",
                "a co-op video game marathon",
            ),
            _t(
                "chess",
                "I watched The Queen's Gambit",
                "it keeps my mind sharp",
                "a local rapid chess tournament",
                "studying classic endgames with a coach",
                "a weighted wooden tournament chess set",
                "a friendly chess tournament with small prizes",
            ),
            _t(
                "crossword puzzles",
                "it is my morning ritual with coffee",
                "I love wordplay",
                "a whole week of New York Times crosswords",
                "writing your own cryptic crossword",
                "a book of cryptic crosswords from The Guardian",
                "a team crossword challenge at the kitchen table",
            ),
        ),
    ),
    Topic(
        "crafts",
        "hobbies",
        "Can you recommend something to buy for my hobby?",
        "It's going to rain all weekend. What should I do at home?",
        (
            _t(
                "pottery",
                "working with clay is so calming",
                "I wanted something offline to do",
                "a wheel-throwing course",
                "raku firing your own glazes",
                "a beginner's pottery wheel",
                "hand-building a few clay mugs",
            ),
            _t(
                "photography",
                "I want to capture my travels",
                "my grandmother left me her old camera",
                "a sunrise photo walk",
                "developing your own black-and-white film",
                "a fast 35mm prime lens",
                "a still-life photo shoot by the window",
            ),
            _t(
                "knitting",
                "it keeps my hands busy while I watch TV",
                "my aunt taught me over the holidays",
                "a chunky wool scarf",
                "knitting a cable-knit sweater",
                "a set of bamboo circular needles",
                "starting a cosy pair of knitted socks",
            ),
            _t(
                "woodworking",
                "I love making something I can use",
                "I inherited my dad's tools",
                "a small oak bookshelf",
                "carving a wooden spoon by hand",
                "a Japanese pull saw",
                "building a small birdhouse in the garage",
            ),
        ),
    ),
)


def topic(name: str) -> Topic:
    for t in TOPICS:
        if t.name == name:
            return t
    raise KeyError(name)
